"""The study's orchestration: profiles, the job plan, papermill execution, resumption.

A profile (`attnlib/profiles/<name>.toml`) fixes the model, data, hyper-parameters, measurement and the modes and
number of trials. The plan interleaves trials across variants and modes (round 0: every variant, round 1: every
variant, ...), then adds one quality run per variant and mode. Each job is one execution of
`notebooks/variant.ipynb` by papermill, in its own process (no allocator or compile state carried between
variants), and writes one JSON result; a job whose result exists is skipped unless forced, so a killed run
resumes where it stopped.

    python -m attnlib.pipeline run --profile smoke [--variants a,b] [--force] [--max-minutes 8] [--shard 0/2]
    python -m attnlib.pipeline report --profile smoke
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .registry import VARIANTS, get_variant
from .train import STATUSES, TrainConfig, result_skeleton, write_json_atomic

REPO = Path(__file__).resolve().parent.parent
PROFILES = Path(__file__).resolve().parent / "profiles"
TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)} - {"variant", "mode"}


@dataclass(frozen=True)
class Profile:
    name: str
    modes: tuple[str, ...]
    trials: int
    quality_modes: tuple[str, ...]  # compiling does not change the maths: one quality run per variant suffices
    train: dict
    variant_params: dict[str, dict]

    def train_config(self, variant: str, mode: str) -> TrainConfig:
        """The TrainConfig of `variant` in `mode`: the profile's settings plus its parameters for that variant."""
        train = dict(self.train)
        train["model"] = {**train.get("model", {}), **self.variant_params.get(variant, {})}
        return TrainConfig(variant=variant, mode=mode, **train)


def load_profile(name: str) -> Profile:
    """A profile by name (`smoke`, `paper`) or path; `ValueError` for unknown names and malformed files."""
    path = Path(name) if name.endswith(".toml") else PROFILES / f"{name}.toml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in PROFILES.glob("*.toml")))
        raise ValueError(f"profile: unknown profile {name!r}; known: {known}")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"profile: {path} is not valid TOML: {error}") from None
    unknown = (set(raw) - {"run", "train", "variants"}) | (set(raw.get("run", {})) - {"modes", "trials", "quality_modes"})
    if unknown:
        raise ValueError(f"profile: unknown section(s) or [run] key(s) {sorted(unknown)} in {path}")
    run, train, variant_params = raw.get("run", {}), raw.get("train", {}), raw.get("variants", {})
    if set(train) - TRAIN_FIELDS:
        raise ValueError(f"profile: unknown [train] key(s) {sorted(set(train) - TRAIN_FIELDS)} in {path}")
    for variant in variant_params:
        get_variant(variant)
    modes = tuple(run.get("modes", ["eager"]))
    quality_modes = tuple(run.get("quality_modes", modes[:1]))
    if not set(quality_modes) <= set(modes):
        raise ValueError(f"profile: quality_modes {quality_modes} must be among modes {modes} in {path}")
    profile = Profile(path.stem, modes, int(run.get("trials", 3)), quality_modes, train, variant_params)
    for variant in VARIANTS:  # build every config now: bad values fail before any work
        for mode in profile.modes:
            profile.train_config(variant, mode)
    return profile


@dataclass(frozen=True)
class Job:
    variant: str
    mode: str
    kind: str  # "trial" or "quality"
    trial: int | None = None

    @property
    def name(self) -> str:
        suffix = f"trial{self.trial}" if self.kind == "trial" else "quality"
        return f"{self.variant}__{self.mode}__{suffix}"


def plan(profile: Profile, variants: list[str], shard: tuple[int, int] = (0, 1)) -> list[Job]:
    """Trials interleaved (A B C A B C ...), then quality runs.

    `shard=(i, n)`: the jobs of GPU i when n GPUs share the plan. Within a round, neighbouring jobs go to different
    GPUs and the assignment shifts by one every round, so every variant and mode has trials on each GPU in the same
    pattern: a card-to-card difference enters every variant's confidence interval alike, never one variant's mean."""
    index, count = shard
    per_round = len(variants) * len(profile.modes)
    trials = [Job(v, m, "trial", r) for r in range(profile.trials) for v in variants for m in profile.modes]
    trials = [job for k, job in enumerate(trials) if (k % per_round + k // per_round) % count == index]
    quality = [Job(v, m, "quality") for v in variants for m in profile.quality_modes]
    return trials + [job for k, job in enumerate(quality) if k % count == index]


def result_path(results_dir: Path, job: Job) -> Path:
    return results_dir / "raw" / f"{job.name}.json"


def is_done(path: Path) -> bool:
    """A result exists and is complete (any recorded status counts: a failure is a result, too)."""
    try:
        return json.loads(path.read_text()).get("status") in STATUSES
    except (OSError, json.JSONDecodeError):
        return False


def execute(job: Job, profile: Profile, results_dir: Path, cache_dir: Path) -> None:
    """Run `notebooks/variant.ipynb` for `job` through papermill; record a failure if the notebook died."""
    import papermill

    # Every job is a fresh process: let Triton keep autotuning results on disk (fla's kernels autotune for
    # about 90 s otherwise, in every process) alongside the compiled kernels and inductor's graph cache.
    os.environ.setdefault("TRITON_CACHE_AUTOTUNING", "1")
    out = result_path(results_dir, job)
    executed = results_dir / "notebooks" / f"{job.name}.ipynb"
    executed.parent.mkdir(parents=True, exist_ok=True)
    parameters = {"profile": profile.name, "variant": job.variant, "mode": job.mode, "kind": job.kind,
                  "trial": job.trial if job.trial is not None else 0, "result_path": str(out.resolve()),
                  "cache_dir": str(cache_dir.resolve())}
    try:
        papermill.execute_notebook(REPO / "notebooks" / "variant.ipynb", executed, parameters=parameters,
                                   kernel_name="python3", progress_bar=False, cwd=str(REPO / "notebooks"))
        tidy_executed(executed)
    except Exception as error:  # the kernel died (e.g. a hard crash): the run goes on, the table shows it
        if not is_done(out):
            result = result_skeleton(job.kind, profile.train_config(job.variant, job.mode), trial=job.trial)
            result["status"], result["error"] = "error", f"notebook failed: {str(error)[-2000:]}"
            write_json_atomic(out, result)


def tidy_executed(notebook: Path) -> None:
    """Keep what a reader of a committed executed notebook needs: the result summary, plots and any error; drop
    stderr streams (library warnings) and execution timestamps, and number the cells, so that executing the same
    notebook on the same results gives the same file."""
    nb = json.loads(notebook.read_text())
    for index, cell in enumerate(nb["cells"]):
        cell["id"] = f"cell-{index}"
        for key in ("execution", "papermill"):
            cell.get("metadata", {}).pop(key, None)
        if "outputs" in cell:
            cell["outputs"] = [o for o in cell["outputs"] if not (o["output_type"] == "stream" and o["name"] == "stderr")]
    run = nb.get("metadata", {}).get("papermill")
    if run is not None:
        nb["metadata"]["papermill"] = {k: run[k] for k in ("parameters", "version") if k in run}
    notebook.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def calibrate(results_dir: Path) -> None:
    """On a GPU, measure its bf16 GEMM peak and J/FLOP once per card and results folder
    (`calibration/<card uuid>.json`), in its own process: the report divides each result by its card's figures
    for MFU and for energy as a multiple of the floor."""
    import subprocess

    import torch

    if not torch.cuda.is_available():
        return
    done = subprocess.run([sys.executable, "-m", "attnlib.measurement.calibrate",
                           "--out-dir", str(results_dir / "calibration")])
    if done.returncode != 0:
        print("calibration failed: MFU and floor multiples will be n/a in the tables", flush=True)


def run(profile: Profile, variants: list[str], results_dir: Path, cache_dir: Path, force: bool = False,
        max_minutes: float | None = None, shard: tuple[int, int] = (0, 1)) -> int:
    """Execute the plan (this GPU's shard of it); returns the number of jobs still to do (0 when complete)."""
    calibrate(results_dir)
    jobs = plan(profile, variants, shard)
    todo = [j for j in jobs if force or not is_done(result_path(results_dir, j))]
    print(f"{profile.name}: {len(jobs)} jobs, {len(jobs) - len(todo)} already done, {len(todo)} to run", flush=True)
    start = time.monotonic()
    for index, job in enumerate(todo):
        if index and max_minutes is not None and time.monotonic() - start > max_minutes * 60:  # >= 1 job per call
            print(f"stopped after {max_minutes} min; {len(todo) - index} jobs left: run again to resume", flush=True)
            return len(todo) - index
        job_start = time.monotonic()
        execute(job, profile, results_dir, cache_dir)
        status = json.loads(result_path(results_dir, job).read_text())["status"]
        print(f"[{index + 1}/{len(todo)}] {job.name}: {status} ({time.monotonic() - job_start:.0f} s)", flush=True)
    return 0


def report(profile: Profile, results_dir: Path) -> None:
    """Execute `notebooks/aggregate.ipynb`: tables, figures and macros from every result of the profile."""
    import papermill

    executed = results_dir / "notebooks" / "aggregate.ipynb"
    executed.parent.mkdir(parents=True, exist_ok=True)
    # relative to the notebook's folder: the executed copy is the same on every machine
    results = os.path.relpath(results_dir.resolve(), REPO / "notebooks")
    papermill.execute_notebook(REPO / "notebooks" / "aggregate.ipynb", executed,
                               parameters={"profile": profile.name, "results_dir": results},
                               kernel_name="python3", progress_bar=False, cwd=str(REPO / "notebooks"))
    tidy_executed(executed)


def _parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard: '{text}' is not I/N (e.g. 0/2)") from None
    if not 0 <= index < count:
        raise ValueError(f"--shard: {text} is not a GPU index I/N with 0 <= I < N")
    return index, count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attnlib.pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["run", "report"])
    parser.add_argument("--profile", required=True)
    parser.add_argument("--variants", default="all", help="comma-separated names, or 'all'")
    parser.add_argument("--results", type=Path, help="results folder (default results/<profile>)")
    parser.add_argument("--cache", type=Path, default=REPO / ".cache", help="tokenized-data cache")
    parser.add_argument("--force", action="store_true", help="redo jobs whose result exists")
    parser.add_argument("--max-minutes", type=float, help="start no new job after this long (resumable chunks)")
    parser.add_argument("--shard", default="0/1", help="I/N: run GPU I's share of the plan when N GPUs run it "
                        "(one process per GPU, each with its own CUDA_VISIBLE_DEVICES; run_all.sh --gpus N)")
    args = parser.parse_args(argv)
    try:
        shard = _parse_shard(args.shard)
        profile = load_profile(args.profile)
        variants = list(VARIANTS) if args.variants == "all" else [get_variant(v).name for v in args.variants.split(",")]
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    results_dir = args.results or REPO / "results" / profile.name
    if args.command == "run":
        left = run(profile, variants, results_dir, args.cache, args.force, args.max_minutes, shard)
        return 3 if left else 0
    report(profile, results_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

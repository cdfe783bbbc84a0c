"""The study's orchestration: profiles, the job plan, papermill execution, resumption, the run record.

A profile (`attnlib/profiles/<name>.toml`) fixes the training setup (`[train]`), the families it runs, each with
its section (`[trials]`, `[quality]`, `[longcontext]`, `[inference]`, `[components]`), the plan's seed (`[plan]`)
and per-variant parameters (`[variants.<name>]`). The plan has one job per variant and family, variants in an order drawn from the plan's
seed, each variant's jobs together; a variant's quality runs go into its trials job when they train in one of its
modes (they reuse its trainer and compiled code).
Each job is one papermill execution of its family's notebook (`notebooks/trials.ipynb`, `quality.ipynb`) in its
own process, given the job's resolved config, and writes JSON results; a job whose results all exist is skipped
unless forced (then its results are deleted first), so a killed run resumes where it stopped: a components,
inference or distributed job at its first missing window, a trials or quality job at its first mode or seed
without results, a long-context job at its first missing window or paired cell. `run.json` records the device
time of every chunk.

    python -m attnlib.pipeline run --profile smoke [--variants a,b] [--results DIR] [--force] [--max-minutes 4]
                                   [--stop-minutes 8]
    python -m attnlib.pipeline report --profile smoke [--results DIR]
    python -m attnlib.pipeline compare --results DIR [--reference results/paper]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from typing import Any
from dataclasses import dataclass
from pathlib import Path

from .experiments import components, distributed, inference, longcontext, quality, recall, trials
from .experiments.components import ComponentsConfig
from .experiments.distributed import DistributedConfig
from .experiments.inference import InferenceConfig
from .experiments.longcontext import LongContextConfig
from .experiments.quality import QualityConfig
from .experiments.recall import RecallConfig
from .experiments.training import TrainConfig
from .experiments.trials import TrialsConfig
from .measurement.trials import round_orders
from .provenance import attnlib_commit
from .registry import VARIANTS, get_variant, supported_variants
from .results import is_complete, load_results, read_run

REPO = Path(__file__).resolve().parent.parent
PROFILES = Path(__file__).resolve().parent / "profiles"
FAMILIES = {"trials": trials, "quality": quality, "recall": recall,  # in the order of a variant's jobs
            "longcontext": longcontext, "inference": inference, "components": components, "distributed": distributed}
SECTIONS = {"train": TrainConfig, "trials": TrialsConfig, "quality": QualityConfig, "recall": RecallConfig,
            "longcontext": LongContextConfig,
            "inference": InferenceConfig, "components": ComponentsConfig, "distributed": DistributedConfig,
            "plan": None, "variants": None}


@dataclass(frozen=True)
class Profile:
    name: str
    train: dict
    families: dict[str, dict]  # family -> its section's settings, for the families the profile runs
    plan_seed: int
    variant_params: dict[str, dict]
    variants: tuple[str, ...] = tuple(VARIANTS)  # what `--variants all` runs ([plan] variants)

    def train_config(self, variant: str) -> TrainConfig:
        """The profile's training setup with its parameters for `variant`."""
        train = dict(self.train)
        train["model"] = {**train.get("model", {}), **self.variant_params.get(variant, {})}
        return TrainConfig(variant=variant, **train)

    def job_config(self, family: str, variant: str, order_seed: int = 0) -> Any:
        """The resolved config (`SECTIONS[family]`) of `variant`'s job of `family`; `order_seed` draws the order
        inside the job."""
        settings, train = dict(self.families[family]), self.train_config(variant)
        if family == "quality":  # quality runs in one mode, given in its section; `one_seed` variants its first seed
            train = dataclasses.replace(train, mode=settings.pop("mode", "eager"),
                                        compile_scope=settings.pop("compile_scope", train.compile_scope))
            if variant in settings.pop("one_seed", []):
                settings["seeds"] = settings.get("seeds", [1, 2, 3])[:1]
            return QualityConfig(train=train, **settings)
        if family == "trials":
            settings = self.trials_settings(variant)
        if family == "trials" and self.quality_in_trials(variant):
            settings["quality"] = self.job_config("quality", variant)
        return SECTIONS[family](train=train, order_seed=order_seed, **settings)

    def trials_settings(self, variant: str) -> dict:
        """The [trials] section for `variant`: its `modes`, plus those `extra_modes` (mode -> variants) gives it."""
        settings = dict(self.families["trials"])
        extra, modes = settings.pop("extra_modes", {}), list(settings.get("modes", trials.MODES))
        return {**settings, "modes": modes + [m for m, names in extra.items() if variant in names and m not in modes]}

    def quality_in_trials(self, variant: str) -> bool:
        """Whether `variant`'s quality runs go into its trials job: both families run and the quality runs' setup
        is one the trials job trains in (then they reuse its trainer: no process or compilation of their own)."""
        if not {"trials", "quality"} <= set(self.families):
            return False
        trials = SECTIONS["trials"](train=self.train_config(variant), **self.trials_settings(variant))
        quality = self.job_config("quality", variant)
        return trials.mode_config(quality.train.mode) == quality.train


def load_profile(name: str, gpus: int | None = None) -> Profile:
    """A profile by name (`smoke`, `paper`) or path; `ValueError` naming the problem for unknown names, unknown
    keys and bad values, before any work. `gpus`: the cards its distributed jobs run on (`[distributed] gpus`)."""
    path = Path(name) if name.endswith(".toml") else PROFILES / f"{name}.toml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in PROFILES.glob("*.toml")))
        raise ValueError(f"profile: unknown profile {name!r}; known: {known}")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"profile: {path} is not valid TOML: {error}") from None
    if set(raw) - set(SECTIONS):
        raise ValueError(f"profile: unknown section(s) {sorted(set(raw) - set(SECTIONS))} in {path}")
    for section, cls in SECTIONS.items():
        allowed = {"seed", "variants"} if section == "plan" else {f.name for f in dataclasses.fields(cls)} if cls else None
        allowed = allowed if section != "quality" else allowed | {"mode", "compile_scope", "one_seed"}
        allowed = allowed if section != "trials" else allowed | {"extra_modes"}
        if allowed is not None and set(raw.get(section, {})) - allowed:
            raise ValueError(f"profile: unknown [{section}] key(s) {sorted(set(raw[section]) - allowed)} in {path}")
    for variant in [*raw.get("variants", {}), *raw.get("quality", {}).get("one_seed", []),
                    *(v for names in raw.get("trials", {}).get("extra_modes", {}).values() for v in names)]:
        get_variant(variant)
    families = {family: raw[family] for family in FAMILIES if family in raw}
    from .archs import get_arch

    arch = get_arch(raw.get("train", {}).get("arch", "gpt2")).name
    own = supported_variants(arch)  # the variants with a form on the profile's model family
    for variant in own:  # the training setup is checked first: every family builds on it
        Profile(path.stem, raw.get("train", {}), {}, 0, raw.get("variants", {})).train_config(variant)
    if not families:
        sections = ", ".join(f"[{f}]" for f in FAMILIES)
        raise ValueError(f"profile: {path} runs no family; give at least one of {sections}")
    if gpus is not None:
        if "distributed" not in families:
            raise ValueError(f"gpus: profile {path.stem!r} has no [distributed] section to run on {gpus} GPUs")
        import torch

        if torch.cuda.is_available() and gpus > torch.cuda.device_count():
            raise ValueError(f"gpus: {gpus} asked for, {torch.cuda.device_count()} visible")
        families["distributed"] = {**families["distributed"], "gpus": gpus}
    chosen = tuple(get_variant(v).name for v in raw.get("plan", {}).get("variants", own))
    profile = Profile(path.stem, raw.get("train", {}), families, int(raw.get("plan", {}).get("seed", 0)),
                      raw.get("variants", {}), chosen)
    for variant in own:  # build every config now: bad values fail before any work
        for family in families:
            profile.job_config(family, variant)
    return profile


@dataclass(frozen=True)
class Job:
    family: str  # a key of FAMILIES
    variant: str
    config: dict  # the resolved config the notebook receives

    @property
    def name(self) -> str:
        return f"{self.variant}__{self.family}"

    def result_names(self) -> list[str]:
        """The result files this job writes (under raw/)."""
        c = self.config
        if self.family == "trials":
            return TrialsConfig(**c).result_names()
        if self.family == "quality":
            return [f"{self.variant}__quality__seed{s}.json" for s in c["seeds"]]
        return SECTIONS[self.family](**c).result_names()


def plan(profile: Profile, variants: list[str]) -> list[Job]:
    """Variants in an order drawn from the plan seed, each variant's jobs together (trials, quality, long context),
    the reference's first where the jobs are paired with one: its own job is the table's A/A control, which every
    claim of the table waits for, so a grid cut short by its budget still has it. Quality runs that train in one of
    the trials job's modes are part of that job (`Profile.quality_in_trials`), others a job of their own right after
    it. Each job gets its own seed for the order inside it (all recorded in the results)."""
    jobs = []
    for v in round_orders(variants, 1, profile.plan_seed)[0]:
        order_seed = profile.plan_seed + 1 + list(VARIANTS).index(v)
        jobs += [Job(family, v, profile.job_config(family, v, order_seed).to_dict()) for family in FAMILIES
                 if family in profile.families and not (family == "quality" and profile.quality_in_trials(v))]
    reference = next((j.config["reference"] for j in jobs if j.config.get("reference")), None)
    return sorted(jobs, key=lambda j: j.variant != reference)  # stable: the others keep the drawn order


def is_done(job: Job, results_dir: Path) -> bool:
    return all(is_complete(results_dir / "raw" / name) for name in job.result_names())


def execute(job: Job, results_dir: Path, cache_dir: Path, timeout_s: float | None = None) -> bool:
    """Run the job's family notebook through papermill; False if the kernel died or ran past `timeout_s` (then it
    is stopped, and the job's finished results stay: a later run resumes or redoes the job)."""
    # Every job is a fresh process: let Triton keep autotuning results on disk (fla's kernels autotune for
    # about 90 s otherwise, in every process) alongside the compiled kernels and inductor's graph cache.
    os.environ.setdefault("TRITON_CACHE_AUTOTUNING", "1")
    executed = results_dir / "notebooks" / f"{job.name}.ipynb"
    executed.parent.mkdir(parents=True, exist_ok=True)
    parameters = {"variant": job.variant, "config": job.config, "out_dir": str((results_dir / "raw").resolve()),
                  "cache_dir": str(cache_dir.resolve())}
    notebook = FAMILIES[job.family].NOTEBOOK
    try:  # the job runs in one cell, so the per-cell timeout bounds the job
        run_notebook(REPO / "notebooks" / notebook, executed, parameters,
                     timeout_s=None if timeout_s is None else max(1, int(timeout_s)))
        tidy_executed(executed)
        return True
    except Exception as error:  # the kernel died (e.g. a hard crash) or timed out: the run goes on, the table shows it
        missing = [n for n in job.result_names() if not is_complete(results_dir / "raw" / n)]
        print(f"{job.name}: notebook failed ({str(error)[-500:]}); {len(missing)} results missing", flush=True)
        return False


def run_notebook(notebook: Path, executed: Path, parameters: dict, cwd: Path = REPO / "notebooks",
                 timeout_s: int | None = None) -> None:
    """Execute `notebook` into `executed` with `parameters` through papermill, its kernel on IPC sockets in a
    private temporary folder: no TCP port (ipykernel warns that unencrypted TCP may be eavesdropped on) and no file
    in the working tree. The kernel imports this checkout's attnlib (first on its PYTHONPATH), whatever another
    install of it says: the notebook writes where this pipeline does."""
    import papermill
    from jupyter_client.manager import AsyncKernelManager

    path = os.environ.get("PYTHONPATH", "")
    if path.split(os.pathsep)[0] != str(REPO):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), path) if p)

    with tempfile.TemporaryDirectory(prefix="attnlib-kernel-") as sockets:
        class IpcKernelManager(AsyncKernelManager):
            def __init__(self, **kwargs: Any):
                super().__init__(**{**kwargs, "transport": "ipc", "ip": str(Path(sockets) / "kernel")})

        papermill.execute_notebook(notebook, executed, parameters=parameters, kernel_name="python3",
                                   progress_bar=False, cwd=str(cwd), execution_timeout=timeout_s,
                                   kernel_manager_class=IpcKernelManager)


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
    for MFU and for energy as a multiple of the floor. A card that a sibling results folder has calibrated is copied
    from there."""
    import torch

    if not torch.cuda.is_available():
        return
    siblings = sorted(str(d) for d in results_dir.resolve().parent.glob("*/calibration")
                      if d.parent != results_dir.resolve())
    done = subprocess.run([sys.executable, "-m", "attnlib.measurement.calibrate",
                           "--out-dir", str(results_dir / "calibration"), "--reuse", *siblings])
    if done.returncode != 0:
        print("calibration failed: MFU and floor multiples will be n/a in the tables", flush=True)


def record_chunk(results_dir: Path, wall_s: float, jobs: list[str], since: str) -> dict:
    """Add one pipeline run (chunk) to `run.json`: the device, the chunk's wall time, jobs and measured windows'
    time (`windows_s`: the windows of results written since `since`, a UTC ISO time), and the totals `minutes` (the
    measuring runs' wall time on the device: GPU minutes on a GPU) and `measured_fraction` (windows over it)."""
    from .provenance import device_name

    path = results_dir / "run.json"
    record = read_run(results_dir) or {"chunks": []}
    if wall_s > 0 and jobs:
        windows_s = sum(r.measurement.wall_s for r in load_results(results_dir) if r.measurement is not None
                        and r.measurement.wall_s is not None and r.provenance is not None
                        and r.provenance.created >= since)
        record["chunks"].append({"wall_s": round(wall_s, 1), "windows_s": round(windows_s, 1), "jobs": jobs})
    record["device"] = device_name()[0]
    device_s = sum(c["wall_s"] for c in record["chunks"])
    record["minutes"] = round(device_s / 60, 2)
    record["measured_fraction"] = (round(sum(c.get("windows_s", 0) for c in record["chunks"]) / device_s, 3)
                                   if device_s and all("windows_s" in c for c in record["chunks"]) else None)
    path.write_text(json.dumps(record, indent=1) + "\n")
    return record


def check_device(results_dir: Path) -> None:
    """`ValueError` if `results_dir` holds results measured on another kind of device than this machine's: a run
    there would mix devices in one table, and `--force` would delete what the other device measured."""
    from .provenance import device_name

    here = device_name()[0]
    others = sorted({r.provenance.device for r in load_results(results_dir) if r.provenance is not None} - {here})
    if others:
        raise ValueError(f"results: {results_dir} holds results measured on {', '.join(others)}, and this machine "
                         f"measures on {here}; give this run a folder of its own (--results DIR), so that nothing "
                         "measured there is mixed with, or replaced by, this device's results")


def run(profile: Profile, variants: list[str], results_dir: Path, cache_dir: Path, force: bool = False,
        max_minutes: float | None = None, stop_minutes: float | None = None) -> int:
    """Execute the plan; returns the number of jobs still to do (0 when complete). No job starts after
    `max_minutes`, nor when less time is left before `stop_minutes` than the shortest job this run has finished took
    (it would only be stopped); a job still running at `stop_minutes` is stopped, and the chunk, its time included,
    is recorded."""
    start = time.monotonic()
    since = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    jobs = plan(profile, variants)
    todo = [j for j in jobs if force or not is_done(j, results_dir)]
    print(f"{profile.name}: {len(jobs)} jobs, {len(jobs) - len(todo)} already done, {len(todo)} to run", flush=True)
    if not todo:  # complete: nothing to calibrate for, no chunk to record
        return 0
    calibrate(results_dir)
    ran: list[str] = []
    finished_s: list[float] = []  # how long each job that finished in this run took
    left = 0
    for index, job in enumerate(todo):
        if index and max_minutes is not None and time.monotonic() - start > max_minutes * 60:  # >= 1 job per call
            left += len(todo) - index
            print(f"stopped after {max_minutes} min; {left} jobs left: run again to resume", flush=True)
            break
        job_start = time.monotonic()
        timeout_s = None if stop_minutes is None else stop_minutes * 60 - (job_start - start)
        if timeout_s is not None and timeout_s < max(1.0, min(finished_s, default=0.0)):
            left += len(todo) - index
            print(f"stopped {timeout_s:.0f} s before {stop_minutes} min, too little for a job; {left} jobs left: "
                  "run again to resume", flush=True)
            break
        if force:  # a resuming job keeps the results it finds: forced, it finds none
            for name in job.result_names():
                (results_dir / "raw" / name).unlink(missing_ok=True)
        finished = execute(job, results_dir, cache_dir, timeout_s)
        ran.append(job.name if finished else f"{job.name} (stopped or failed; resumed by the next run)")
        if finished:
            finished_s.append(time.monotonic() - job_start)
        left += 0 if finished else 1
        statuses = [json.loads(p.read_text())["status"] for p in (results_dir / "raw" / n for n in job.result_names())
                    if p.exists()]
        print(f"[{index + 1}/{len(todo)}] {job.name}: {statuses.count('ok')}/{len(job.result_names())} ok "
              f"({time.monotonic() - job_start:.0f} s)", flush=True)
    record = record_chunk(results_dir, time.monotonic() - start, ran, since)
    on_gpu = "cpu" not in record["device"].lower()
    print(f"run.json: {record['minutes']} {'GPU ' if on_gpu else ''}minutes on {record['device']}, measured fraction "
          f"{record['measured_fraction']}", flush=True)
    return left


def report(results_dir: Path) -> None:
    """Execute `notebooks/aggregate.ipynb`: tables, figures and macros from every result of the folder, written
    under the folder's name (`paper/generated/<name>/`, `figures/<name>/`)."""
    executed = results_dir / "notebooks" / "aggregate.ipynb"
    executed.parent.mkdir(parents=True, exist_ok=True)
    # relative to the notebook's folder: the executed copy is the same on every machine
    results = os.path.relpath(results_dir.resolve(), REPO / "notebooks")
    run_notebook(REPO / "notebooks" / "aggregate.ipynb", executed, {"label": results_dir.name, "results_dir": results})
    tidy_executed(executed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attnlib.pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["run", "report", "compare", "decisions"],
                        help="decisions: the paper's decision table from every results folder's summary (--results: "
                             "their parent, default results/)")
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--variants", default="all", help="comma-separated names, or 'all'")
    parser.add_argument("--results", type=Path, help="results folder (default results/<profile>)")
    parser.add_argument("--reference", type=Path, default=REPO / "results" / "paper",
                        help="compare: the results to compare with (default: the committed paper results)")
    parser.add_argument("--cache", type=Path, default=REPO / ".cache", help="tokenized-data cache")
    parser.add_argument("--force", action="store_true", help="redo jobs whose results exist")
    parser.add_argument("--max-minutes", type=float, help="start no new job after this long (resumable chunks)")
    parser.add_argument("--stop-minutes", type=float,
                        help="stop a job still running this long after the run began; the chunk is recorded and "
                             "resumable")
    parser.add_argument("--gpus", type=int, help="cards a distributed job runs on, one torchrun rank each")
    args = parser.parse_args(argv)
    try:
        profile = load_profile(args.profile, args.gpus)
        variants = (list(profile.variants) if args.variants == "all"
                    else [get_variant(v).name for v in args.variants.split(",")])
        for variant in variants:  # one without a form on the profile's model family fails here, with the reason
            profile.train_config(variant)
        if args.command == "run":
            attnlib_commit()  # a malformed $ATTNLIB_COMMIT fails here, not on every result
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.command == "decisions":
        from .report.decisions import build_decisions

        build_decisions(args.results or REPO / "results", REPO / "paper", REPO / "figures")
        return 0
    results_dir = args.results or REPO / "results" / profile.name
    if args.command == "run":
        try:
            check_device(results_dir)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        return 3 if run(profile, variants, results_dir, args.cache, args.force, args.max_minutes,
                       args.stop_minutes) else 0
    if args.command == "compare":
        from .report.compare import compare

        compare(results_dir, args.reference)
        return 0
    report(results_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

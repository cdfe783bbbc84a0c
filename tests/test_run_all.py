"""End to end: `./run_all.sh --profile smoke` runs every variant's trials notebook (its quality runs included)
through papermill, aggregates, and builds the PDF; `--report-only` rebuilds the same tables from the results. A few minutes on 2 cores."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import attnlib
from attnlib.pipeline import load_profile, plan, run_notebook

REPO = Path(__file__).resolve().parent.parent


def run_all(*args: str, repo: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(repo / "run_all.sh"), *args], cwd=repo, capture_output=True, text=True,
                          timeout=1800)


def repository_copy(to: Path, results: bool = False) -> Path:
    """The tracked files of the checkout (the committed measurements only with `results`) copied to `to`: a run
    there writes its results, figures and PDF into the copy, never into the working tree."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True)
    for name in tracked.stdout.split("\0"):
        if name and (results or not name.startswith("results/")) and (REPO / name).is_file():
            (to / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, to / name)
    return to


@pytest.mark.slow
def test_smoke_profile_end_to_end(tmp_path) -> None:
    repo = repository_copy(tmp_path / "attnlib")
    done = run_all("--profile", "smoke", "--force", repo=repo)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = repo / "results" / "smoke"
    raw = sorted((results / "raw").glob("*.json"))
    variants = attnlib.supported_variants("gpt2")  # the smoke profile is GPT-2's
    jobs = plan(load_profile("smoke"), variants)  # per variant its trials job (its quality runs in it) and recall
    assert len(raw) == sum(len(j.result_names()) for j in jobs)
    assert sum(p.name.count("__recall__") for p in raw) == sum(len(j.result_names()) for j in jobs
                                                               if j.family == "recall") > 0
    statuses = {p.stem: json.loads(p.read_text())["status"] for p in raw}
    assert set(statuses.values()) == {"ok"}, statuses
    executed = {p.name for p in (results / "notebooks").glob("*__*.ipynb")}  # executed copies kept
    assert len(jobs) == 2 * len(variants) and {f"{j.name}.ipynb" for j in jobs} <= executed
    run = json.loads((results / "run.json").read_text())
    assert run["device"] == "cpu" and run["minutes"] > 0 and "gpu_minutes" not in run
    assert 0 < run["measured_fraction"] < 1
    assert "GPU minutes" not in done.stdout and "minutes" in done.stdout
    with open(results / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["variant"] for r in rows] == variants
    assert all(float(r["tokens_per_s_mean"]) > 0 and r["gpu_j_per_token_mean"] == "" for r in rows)  # CPU: no energy
    assert all(int(float(r["seeds"])) == 2 and float(r["val_loss_mean"]) > 0 for r in rows)
    for name in ("energy_per_token", "tokens_per_s", "peak_memory", "power_trace", "energy_vs_loss", "loss_curves",
                 "recall_accuracy"):
        assert (repo / "figures" / "smoke" / f"{name}.pdf").stat().st_size > 0
    macros = (repo / "paper" / "generated" / "smoke" / "macros.tex").read_text()
    assert "\\newcommand{\\dataDataset}{python-docs" in macros
    if shutil.which("latexmk") or os.environ.get("CI"):  # CI installs LaTeX: there the PDF is required
        assert (repo / "paper" / "paper-smoke.pdf").stat().st_size > 10_000
        assert "paper/paper-smoke.pdf" in done.stdout

    # the exploration notebook is not part of run_all.sh; it must run on the same results
    run_notebook(repo / "notebooks" / "explore.ipynb", results / "notebooks" / "explore.ipynb",
                 {"results_dir": str(results)}, cwd=repo / "notebooks")

    table = (repo / "paper" / "generated" / "smoke" / "summary.tex").read_text()
    again = run_all("--profile", "smoke", "--report-only", repo=repo)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (repo / "paper" / "generated" / "smoke" / "summary.tex").read_text() == table


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("latexmk") or os.environ.get("CI")), reason="the PDF build needs LaTeX")
def test_the_reviewer_path_without_a_gpu_rebuilds_the_committed_paper_byte_for_byte(tmp_path) -> None:
    """`./run_all.sh` on a machine without a GPU rebuilds the paper from the committed results (`--report-only`, so
    that a GPU machine running the suite rebuilds too instead of measuring); the PDF it writes (dates from the newest
    result, SOURCE_DATE_EPOCH) is the committed one to the byte, in another folder too."""
    repo = repository_copy(tmp_path / "attnlib", results=True)
    done = run_all("--report-only", repo=repo)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "paper/paper.pdf" in done.stdout
    assert (repo / "paper" / "paper.pdf").read_bytes() == (REPO / "paper" / "paper.pdf").read_bytes()


@pytest.mark.slow
def test_bad_arguments_fail_before_any_work() -> None:
    for args in (["--profile", "huge"], ["--variants", "performer", "--profile", "smoke"], ["--frobnicate"],
                 ["--results", "/nonexistent/folder", "--report-only", "--profile", "smoke"]):
        done = run_all(*args)
        assert done.returncode != 0 and any(w in done.stderr for w in ("error", "unknown", "no results")), (args, done.stderr)

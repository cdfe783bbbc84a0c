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
from attnlib.pipeline import load_profile, plan

REPO = Path(__file__).resolve().parent.parent


def run_all(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "run_all.sh"), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=1800)


@pytest.mark.slow
def test_smoke_profile_end_to_end() -> None:
    done = run_all("--profile", "smoke", "--force")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = REPO / "results" / "smoke"
    raw = sorted((results / "raw").glob("*.json"))
    assert len(raw) == 6 * len(attnlib.VARIANTS)  # two rounds (a window of the variant, one of sdpa), two seeds
    statuses = {p.stem: json.loads(p.read_text())["status"] for p in raw}
    assert set(statuses.values()) == {"ok"}, statuses
    jobs = plan(load_profile("smoke"), list(attnlib.VARIANTS))  # one job per variant: its quality runs are in it
    executed = {p.name for p in (results / "notebooks").glob("*__*.ipynb")}  # executed copies kept
    assert len(jobs) == len(attnlib.VARIANTS) and {f"{j.name}.ipynb" for j in jobs} <= executed
    run = json.loads((results / "run.json").read_text())
    assert run["device"] == "cpu" and run["gpu_minutes"] > 0 and 0 < run["measured_fraction"] < 1
    with open(results / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["variant"] for r in rows] == list(attnlib.VARIANTS)
    assert all(float(r["tokens_per_s_mean"]) > 0 and r["gpu_j_per_token_mean"] == "" for r in rows)  # CPU: no energy
    assert all(int(float(r["seeds"])) == 2 and float(r["val_loss_mean"]) > 0 for r in rows)
    for name in ("energy_per_token", "tokens_per_s", "peak_memory", "power_trace", "energy_vs_loss", "loss_curves"):
        assert (REPO / "figures" / "smoke" / f"{name}.pdf").stat().st_size > 0
    macros = (REPO / "paper" / "generated" / "smoke" / "macros.tex").read_text()
    assert "\\newcommand{\\dataDataset}{python-docs" in macros
    if shutil.which("latexmk") or os.environ.get("CI"):  # CI installs LaTeX: there the PDF is required
        assert (REPO / "paper" / "paper-smoke.pdf").stat().st_size > 10_000

    import papermill  # the exploration notebook is not part of run_all.sh; it must run on the same results

    papermill.execute_notebook(REPO / "notebooks" / "explore.ipynb", results / "notebooks" / "explore.ipynb",
                               parameters={"results_dir": str(results)}, kernel_name="python3", progress_bar=False,
                               cwd=str(REPO / "notebooks"))

    table = (REPO / "paper" / "generated" / "smoke" / "summary.tex").read_text()
    again = run_all("--profile", "smoke", "--report-only")
    assert again.returncode == 0, again.stderr[-3000:]
    assert (REPO / "paper" / "generated" / "smoke" / "summary.tex").read_text() == table


def test_bad_arguments_fail_before_any_work() -> None:
    for args in (["--profile", "huge"], ["--variants", "performer", "--profile", "smoke"], ["--frobnicate"],
                 ["--results", "/nonexistent/folder", "--report-only", "--profile", "smoke"]):
        done = run_all(*args)
        assert done.returncode != 0 and any(w in done.stderr for w in ("error", "unknown", "no results")), (args, done.stderr)

"""End to end: `./run_all.sh --profile smoke` runs every variant's notebooks through papermill, aggregates, and
builds the PDF; `--report-only` rebuilds the same tables from the results. About 8 minutes on 2 cores."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import attnlib

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
    assert len(raw) == 3 * len(attnlib.VARIANTS)  # two trials and one quality run per variant
    statuses = {p.stem: json.loads(p.read_text())["status"] for p in raw}
    assert set(statuses.values()) == {"ok"}, statuses
    assert len(list((results / "notebooks").glob("*__*.ipynb"))) == len(raw)  # executed copies kept
    with open(results / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["variant"] for r in rows] == list(attnlib.VARIANTS)
    assert all(float(r["tokens_per_s_mean"]) > 0 and r["gpu_j_per_token_mean"] == "" for r in rows)  # CPU: no energy
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


@pytest.mark.slow
def test_without_a_gpu_the_default_rebuilds_the_committed_paper() -> None:
    """The reviewer path: `./run_all.sh` on a CPU machine rebuilds tables, macros, figures and the executed
    aggregation notebook from the committed results/paper/, byte for byte, and the PDF."""
    if torch.cuda.is_available():
        pytest.skip("with a GPU, ./run_all.sh measures")
    outputs = [*sorted((REPO / "paper" / "generated" / "paper").iterdir()), *sorted((REPO / "figures" / "paper").iterdir()),
               REPO / "results" / "paper" / "summary.csv", REPO / "results" / "paper" / "notebooks" / "aggregate.ipynb"]
    committed = {path: path.read_bytes() for path in outputs}
    done = run_all()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "rebuilding the paper from the committed results/paper/" in done.stdout
    assert [path.name for path in outputs if path.read_bytes() != committed[path]] == []
    if shutil.which("latexmk") or os.environ.get("CI"):
        assert (REPO / "paper" / "paper.pdf").stat().st_size > 100_000


def test_bad_arguments_fail_before_any_work() -> None:
    for args in (["--profile", "huge"], ["--variants", "performer", "--profile", "smoke"], ["--frobnicate"],
                 ["--gpus", "0", "--profile", "smoke"]):
        done = run_all(*args)
        assert done.returncode != 0 and ("error" in done.stderr or "unknown" in done.stderr), (args, done.stderr)

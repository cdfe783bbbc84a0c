"""Time a reviewer's sdpa check on the GPU: `./run_all.sh --variants sdpa --results DIR`, end to end, as the README says.

Runs the command once in a fresh results folder (calibration, sdpa's paired A/A job in both modes with its quality
seeds, the report and the comparison with the committed results/paper/), and records its wall time, the card, the
commit and the comparison it wrote (the reviewer's sdpa rows beside ours). Writes `reviewer_path.json` and
`reviewer_path.md`.

usage: python scripts/gpu_time_reviewer_path.py --out results/gpu
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from attnlib.provenance import attnlib_commit, library_versions

REPO = Path(__file__).resolve().parent.parent
GOAL_S = 300  # the goal: at most 5 minutes on an H100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_time_reviewer_path: needs a CUDA device")
    results = Path(tempfile.mkdtemp(prefix="reviewer-")) / "mine"
    command = ["./run_all.sh", "--variants", "sdpa", "--results", str(results)]
    start = time.monotonic()
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall_s = time.monotonic() - start
    comparison = results / "comparison.csv"
    rows = list(csv.DictReader(comparison.open())) if comparison.exists() else []
    record = {"device": torch.cuda.get_device_name(), "attnlib_commit": attnlib_commit(),
              "versions": library_versions(), "command": " ".join(command[:-1] + ["DIR"]), "returncode": run.returncode,
              "wall_s": round(wall_s, 1), "goal_s": GOAL_S, "latex": shutil.which("latexmk") is not None,
              "comparison": rows, "output_tail": (run.stdout + run.stderr)[-3000:],
              "rows": [{"case": "reviewer path", "ok": run.returncode == 0}]}  # the queue reruns a failed check
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "reviewer_path.json").write_text(json.dumps(record, indent=1) + "\n")
    lines = [f"# A reviewer's sdpa check on {record['device']} (attnlib {record['attnlib_commit'][:12]})", "",
             f"`{record['command']}`: {wall_s:.0f} s end to end (goal: {GOAL_S} s), exit code {run.returncode}; "
             + ("the PDF built too." if record["latex"] else "no LaTeX on this machine, so no PDF in that time."), ""]
    if rows:
        lines += ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        lines += ["| " + " | ".join(r.values()) + " |" for r in rows]
    (args.out / "reviewer_path.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

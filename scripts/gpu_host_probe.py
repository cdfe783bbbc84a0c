"""Is compiled (no CUDA graph) training bound by the host, and what lifts it? A diagnostic, not a table.

For each variant, whole-model compiled trainers (as the paper's compile rows) under Inductor settings
(`CONDITIONS`), one after the other, each compiled afresh (`torch._dynamo.reset()`: dynamo would otherwise reuse
the first compiled code for every trainer). For each: the first step's wall time (compilation), the host time of
each phase of a step, timed from an idle GPU (synchronise, time the calls, synchronise: one step's ~500 launches do
not fill the launch queue, so the host's time is its own, not a wait), against the step's wall time, then
`--windows` windows of 5 s. A loop whose host time per step reaches the step's GPU time is bound by the host.
Writes DIR/host_probe.json and DIR/host_probe.md.

usage: python scripts/gpu_host_probe.py --out DIR [--variants sdpa,gqa] [--windows 4] [--window-s 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch._inductor.config as inductor_config

from attnlib.data import prepare_data
from attnlib.experiments.training import TrainConfig, Trainer, frozen_gc
from attnlib.provenance import provenance

CONDITIONS = {  # name -> torch._inductor.config settings
    "compile": {},
    "compile-no-asserts": {"size_asserts": False, "alignment_asserts": False, "scalar_asserts": False},
    "compile-cpp": {"cpp_wrapper": True},
}
PHASES = ("batch", "forward", "backward", "clip", "optimizer", "zero+schedule")


def phase_times(trainer: Trainer, steps: int = 20) -> dict:
    """Median host ms of each phase of `Trainer.step` (grad_accum 1), each step started on an idle GPU, and the
    median wall ms of the whole step (until the GPU finishes)."""
    host = {p: [] for p in PHASES}
    host["total"], wall = [], []
    for _ in range(steps):
        torch.cuda.synchronize()
        marks = [time.perf_counter()]
        ids, labels = next(trainer._batches)
        marks.append(time.perf_counter())
        loss = trainer._loss(ids, labels)
        marks.append(time.perf_counter())
        loss.backward()
        marks.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), trainer.config.grad_clip)
        marks.append(time.perf_counter())
        trainer.optimizer.step()
        marks.append(time.perf_counter())
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.schedule.step()
        marks.append(time.perf_counter())
        torch.cuda.synchronize()
        wall.append(1e3 * (time.perf_counter() - marks[0]))
        for phase, begin, end in zip(PHASES, marks, marks[1:]):
            host[phase].append(1e3 * (end - begin))
        host["total"].append(1e3 * (marks[-1] - marks[0]))
    return {**{f"host_ms_{p}": statistics.median(v) for p, v in host.items()}, "wall_ms": statistics.median(wall)}


def window(trainer: Trainer, seconds: float) -> float:
    """Tokens per second over one window of steps between two synchronisations."""
    torch.cuda.synchronize()
    steps, start = 0, time.perf_counter()
    while steps == 0 or time.perf_counter() - start < seconds:
        trainer.step()
        steps += 1
    torch.cuda.synchronize()
    return steps * trainer.config.tokens_per_step / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", default="sdpa,gqa")
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--window-s", type=float, default=5.0)
    args = parser.parse_args()
    origin = provenance()  # before any GPU work: a malformed $ATTNLIB_COMMIT fails here
    if not torch.cuda.is_available():
        raise SystemExit("gpu_host_probe: no CUDA device; this script runs on the GPU machine")
    args.out.mkdir(parents=True, exist_ok=True)
    data = prepare_data("debian-docs", 512, Path(".cache"))
    rows = []
    for variant in args.variants.split(","):
        for condition, settings in CONDITIONS.items():
            torch._dynamo.reset()
            with inductor_config.patch(settings):
                trainer = Trainer(TrainConfig(variant=variant, mode="compile", dataset="debian-docs"), data,
                                  torch.device("cuda"), total_steps=10**6)
                start = time.perf_counter()
                trainer.step()
                torch.cuda.synchronize()
                row = {"variant": variant, "condition": condition, "first_step_s": time.perf_counter() - start}
                for _ in range(9):
                    trainer.step()
                row.update(phase_times(trainer))
                with frozen_gc():
                    tps = [window(trainer, args.window_s) for _ in range(args.windows)]
            rows.append({**row, "tokens_per_s": tps, "spread": (max(tps) - min(tps)) / max(tps)})
            print(json.dumps(rows[-1]), flush=True)
            del trainer
            torch.cuda.empty_cache()
    (args.out / "host_probe.json").write_text(json.dumps({"provenance": origin, "rows": rows}, indent=1) + "\n")
    lines = [f"# Host time of a compiled step ({origin['device']})", "",
             "GPT-2 small, B16 x T512, whole-model `torch.compile`; host ms: median over 20 steps each started on an "
             f"idle GPU; wall ms: the same steps until the GPU finishes; then {args.windows} windows of "
             f"{args.window_s:g} s.", "",
             "| variant | condition | first step s | " + " | ".join(f"host ms {p}" for p in PHASES)
             + " | host ms total | wall ms | tok/s mean | spread % |", "|---" * (len(PHASES) + 7) + "|"]
    lines += [f"| {r['variant']} | {r['condition']} | {r['first_step_s']:.1f} | "
              + " | ".join(f"{r[f'host_ms_{p}']:.2f}" for p in PHASES)
              + f" | {r['host_ms_total']:.1f} | {r['wall_ms']:.1f} | {statistics.mean(r['tokens_per_s']):,.0f} | "
              f"{100 * r['spread']:.1f} |" for r in rows]
    (args.out / "host_probe.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

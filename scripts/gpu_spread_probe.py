"""Where does the window-to-window spread of compiled (no CUDA graph) training come from? A diagnostic, not a table.

For each variant, one compiled trainer (whole model, as the paper's compile rows), warmed up, then rounds of 5 s
windows in a seeded random order of two conditions:
- `bare`: the training loop between two synchronisations, no measurement thread;
- `measured`: the same loop inside `attnlib.measure` (its ~10 Hz NVML power sampler running, a CodeCarbon task).
As in a trials job, one CodeCarbon tracker runs through all windows of a variant.
Per window: tokens/s, the host time of each `Trainer.step()` call (median, 99th percentile, max: with a full launch
queue the host waits for the GPU, so a host-bound loop shows its own step time, and a stall shows as a spike), and
the card's SM clock and temperature at both ends. Writes DIR/spread_probe.json and DIR/spread_probe.md.

usage: python scripts/gpu_spread_probe.py --out DIR [--variants sdpa,gqa] [--rounds 4] [--window-s 5]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import torch

from attnlib.data import prepare_data
from attnlib.experiments.training import TrainConfig, Trainer, frozen_gc
from attnlib.measurement import measure
from attnlib.measurement.codecarbon_estimate import CodeCarbonTracker
from attnlib.measurement.nvml import open_nvml
from attnlib.provenance import provenance

CONDITIONS = ("bare", "measured")


def window(trainer: Trainer, seconds: float, gpus) -> dict:
    """One window of training steps between two synchronisations; the host time of every step call."""
    state = gpus.state()
    torch.cuda.synchronize()
    host_ms, start = [], time.perf_counter()
    while not host_ms or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        trainer.step()
        host_ms.append(1e3 * (time.perf_counter() - t))
    torch.cuda.synchronize()
    wall = time.perf_counter() - start
    end = gpus.state()
    host_ms.sort()
    return {"steps": len(host_ms), "tokens_per_s": len(host_ms) * trainer.config.tokens_per_step / wall,
            "host_ms_p50": statistics.median(host_ms), "host_ms_p99": host_ms[int(0.99 * (len(host_ms) - 1))],
            "host_ms_max": host_ms[-1], "sm_clock_mhz": [state["sm_clock_mhz"][0], end["sm_clock_mhz"][0]],
            "temperature_c": [state["temperature_c"][0], end["temperature_c"][0]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", default="sdpa,gqa")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--window-s", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=20261124)
    args = parser.parse_args()
    origin = provenance()  # before any GPU work: a malformed $ATTNLIB_COMMIT fails here
    if not torch.cuda.is_available():
        raise SystemExit("gpu_spread_probe: no CUDA device; this script runs on the GPU machine")
    args.out.mkdir(parents=True, exist_ok=True)
    data = prepare_data("debian-docs", 512, Path(".cache"))
    gpus, rng, rows = open_nvml(), random.Random(args.seed), []
    for variant in args.variants.split(","):
        trainer = Trainer(TrainConfig(variant=variant, mode="compile", dataset="debian-docs"), data,
                          torch.device("cuda"), total_steps=10**6)
        for _ in range(10):
            trainer.step()
        torch.cuda.synchronize()
        codecarbon = CodeCarbonTracker("USA")
        codecarbon.start()
        with frozen_gc():
            for round_ in range(args.rounds):
                for condition in rng.sample(CONDITIONS, len(CONDITIONS)):
                    if condition == "measured":
                        with measure(f"{variant}/{condition}", codecarbon=codecarbon):
                            row = window(trainer, args.window_s, gpus)
                    else:
                        row = window(trainer, args.window_s, gpus)
                    rows.append({"variant": variant, "condition": condition, "round": round_, **row})
                    print(json.dumps(rows[-1]), flush=True)
        if codecarbon.running:
            codecarbon.stop()
        del trainer
        torch._dynamo.reset()
        torch.cuda.empty_cache()
    (args.out / "spread_probe.json").write_text(json.dumps({"provenance": origin, "rows": rows}, indent=1) + "\n")
    lines = [f"# Compiled-mode spread probe ({origin['device']})", "",
             f"GPT-2 small, B16 x T512, whole-model `torch.compile`, {args.window_s:g} s windows, {args.rounds} rounds "
             f"in random order (seed {args.seed}); host ms = the host time of one `Trainer.step()` call.", "",
             "| variant | condition | round | tok/s | host ms p50 | p99 | max | SM MHz | temp C |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['condition']} | {r['round']} | {r['tokens_per_s']:,.0f} | {r['host_ms_p50']:.1f} | "
              f"{r['host_ms_p99']:.1f} | {r['host_ms_max']:.1f} | {r['sm_clock_mhz'][0]}-{r['sm_clock_mhz'][1]} | "
              f"{r['temperature_c'][0]}-{r['temperature_c'][1]} |" for r in rows]
    (args.out / "spread_probe.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

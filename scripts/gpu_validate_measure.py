"""GPU validation of attnlib.measure (issue 3), one job; writes measure_validation.{json,md} to --out.

1. Idle baseline (measure_idle, 5 s, CUDA context alive).
2. Counter vs trace: one >= 12 s window of a steady bf16 GEMM load; NVML counter energy vs the integral of the
   POWER_INSTANT samples. Target: within 5%.
3. Repeatability: ten 5 s windows of the same GPT-2 small training steps (sdpa, B 16 x T 512, bf16, fused AdamW);
   CV of energy per step. Target: <= 2%.
4. calibrate_peak: 8192^3 bf16 products for 10 s: TFLOP/s and pJ/FLOP.
5. Overhead (benchmark, not test): the same training loop timed bare (synchronised wall clock) and inside a full
   measure window (sampler + CodeCarbon), interleaved 7 times; median of the pairs' tokens/s ratios.
   Target: <= 1% slower.
6. Independent cross-check: five 10 s windows of the same steps, each inside both an attnlib window and Zeus'
   `ZeusMonitor` window (PyPI `zeus`, optional); relative difference of the joules. Target: <= 1% (the counter
   steps every 100 ms, 1% of a 10 s window).

usage: python scripts/gpu_validate_measure.py --out DIR
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import attnlib
from attnlib.provenance import provenance
from attnlib.measurement import calibrate_peak, measure, measure_idle, summarize

BATCH, SEQ_LEN = 16, 512


def training_step_fn(variant: str = "sdpa"):
    """One GPT-2 small training step on fixed random tokens (the work, not the data, is what is measured)."""
    torch.manual_seed(0)
    model = attnlib.build_model(variant, seq_len=SEQ_LEN).cuda().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    tokens = torch.randint(0, 50257, (BATCH, SEQ_LEN), device="cuda")

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(tokens, labels=tokens).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def steps_for(step, seconds: float) -> int:
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(5):
        step()
    torch.cuda.synchronize()
    return max(1, round(seconds / ((time.perf_counter() - start) / 5)))


def zeus_agreement(step, n: int, idle) -> dict:
    """Each of five windows of `n` steps inside a Zeus window and an attnlib window, Zeus outermost (it
    synchronises at both ends too); the relative difference of the two energies, per window."""
    try:
        from zeus.monitor import ZeusMonitor
    except ImportError as error:
        return {"error": f"zeus not importable: {error}"}
    monitor = ZeusMonitor(gpu_indices=[torch.cuda.current_device()])
    rows = []
    for i in range(5):
        monitor.begin_window(f"zeus {i}")
        with measure(f"zeus {i}", idle=idle, codecarbon=False) as window:
            for _ in range(n):
                step()
        zeus = monitor.end_window(f"zeus {i}")
        ours = window.result.gpu_energy_j
        rows.append({"attnlib_j": ours, "zeus_j": zeus.total_energy, "attnlib_s": window.result.wall_s,
                     "zeus_s": zeus.time, "relative_difference": (ours - zeus.total_energy) / zeus.total_energy})
    worst = max(abs(r["relative_difference"]) for r in rows)
    return {"windows": rows, "max_abs_relative_difference": worst, "zeus_version": __import__("zeus").__version__}


def zeus_cell(z: dict) -> str:
    if "error" in z:
        return z["error"]
    diffs = ", ".join(f"{100 * r['relative_difference']:+.2f}%" for r in z["windows"])
    return f"max {100 * z['max_abs_relative_difference']:.2f}% ({diffs}; zeus {z['zeus_version']})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    origin = provenance()  # before any GPU work: a malformed $ATTNLIB_COMMIT fails here
    if not torch.cuda.is_available():
        raise SystemExit("gpu_validate_measure: no CUDA device; this script runs on the GPU machine")
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {}

    idle = measure_idle(5.0)
    report["idle"] = {"power_w": idle.power_w, "source": idle.source}
    print("idle", report["idle"], flush=True)

    a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(20):
        a @ b
    torch.cuda.synchronize()
    with measure("steady gemm", keep_trace=True, codecarbon=False) as window:
        end = time.perf_counter() + 12.0
        while time.perf_counter() < end:
            for _ in range(50):
                a @ b
            torch.cuda.synchronize()
    r = window.result
    report["counter_vs_trace"] = {
        "wall_s": r.wall_s, "counter_j": r.gpu_energy_j, "trace_j": r.gpu_energy_trace_j,
        "relative_difference": (r.gpu_energy_trace_j - r.gpu_energy_j) / r.gpu_energy_j,
        "samples": r.gpu_power_samples, "power_source": r.gpu_power_source, "counter_updates": r.energy_counter_updates,
        "mean_power_w": r.gpu_power_mean_w, "peak_power_w": r.gpu_power_peak_w,
        "trace": r.power_trace,
    }
    print("counter vs trace", {k: v for k, v in report["counter_vs_trace"].items() if k != "trace"}, flush=True)
    del a, b

    step = training_step_fn()
    n = steps_for(step, 5.0)
    windows = []
    for i in range(10):
        with measure(f"repeat {i}", tokens=n * BATCH * SEQ_LEN, idle=idle) as window:
            for _ in range(n):
                step()
        windows.append(window.result)
    per_step = summarize([w.gpu_energy_j / n for w in windows])
    report["repeatability"] = {
        "steps_per_window": n, "windows": len(windows), "j_per_step": per_step.to_dict(),
        "wall_s": [w.wall_s for w in windows], "tokens_per_s": [w.tokens_per_s for w in windows],
        "gpu_j_per_token": [w.gpu_j_per_token for w in windows],
        "gpu_j_per_token_net": [w.gpu_j_per_token_net for w in windows],
        "example_window": windows[0].to_dict(),
    }
    print("repeatability", {k: v for k, v in report["repeatability"].items() if k != "example_window"}, flush=True)

    calibration = calibrate_peak(8192, 10.0)
    report["calibration"] = calibration.to_dict()
    print("calibration", calibration.tflops, calibration.pj_per_flop, flush=True)

    bare, measured = [], []
    for i in range(7):  # interleaved: bare, measured, bare, measured, ...
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(n):
            step()
        torch.cuda.synchronize()
        bare.append(n * BATCH * SEQ_LEN / (time.perf_counter() - start))
        with measure(f"overhead {i}", tokens=n * BATCH * SEQ_LEN, idle=idle) as window:
            for _ in range(n):
                step()
        measured.append(window.result.tokens_per_s)
    report["overhead"] = {
        "bare_tokens_per_s": bare, "measured_tokens_per_s": measured,
        "slowdown": 1 - statistics.median(measured) / statistics.median(bare),
        # pairs sit next to each other in time, so their ratio cancels slow drift in clocks and temperature
        "slowdown_pairwise_median": 1 - statistics.median(m / b for m, b in zip(measured, bare)),
    }
    print("overhead", report["overhead"], flush=True)

    report["zeus"] = zeus_agreement(step, steps_for(step, 10.0), idle)
    print("zeus", report["zeus"], flush=True)

    report["environment"] = windows[0].environment
    report["provenance"] = origin
    (args.out / "measure_validation.json").write_text(json.dumps(report, indent=1))
    c, rep, o = report["counter_vs_trace"], report["repeatability"], report["overhead"]
    md = f"""# attnlib.measure validation on {report['environment'].get('gpu_names')}

| check | figure | target |
|---|---|---|
| idle power, CUDA context alive | {report['idle']['power_w']:.1f} W | - |
| counter vs integrated POWER_INSTANT trace, {c['wall_s']:.1f} s GEMM load | {c['counter_j']:.0f} J vs {c['trace_j']:.0f} J: {100 * c['relative_difference']:+.2f}% | within 5% |
| CV of energy per step, ten 5 s windows of GPT-2 small training | {100 * rep['j_per_step']['cv']:.2f}% (mean {rep['j_per_step']['mean']:.2f} J/step, {rep['steps_per_window']} steps/window) | <= 2% |
| calibrated bf16 GEMM 8192^3 | {calibration.tflops:.0f} TFLOP/s, {calibration.pj_per_flop:.3f} pJ/FLOP | - |
| attnlib vs Zeus `ZeusMonitor`, five 10 s windows of the same steps | {zeus_cell(report['zeus'])} | <= 1% |
| measurement overhead, 7 interleaved bare/measured pairs | {100 * o['slowdown_pairwise_median']:+.2f}% slower (median of pair ratios; ratio of medians {100 * o['slowdown']:+.2f}%) | <= 1% |
"""
    (args.out / "measure_validation.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()

"""Check `attnlib.decode` on the GPU before an inference profile relies on it: per variant, in bf16,

- correctness: prefill + steps against the full forward pass over the same tokens (teacher forcing), the largest
  logit difference relative to the logits' scale and whether greedy picks agree, eager and as a CUDA graph;
- the fast paths: ms per decode step at batch 1 after a 512-token prompt in every `DECODE_MODES` mode but
  "compile" (eager, "cudagraph": the eager step captured, "graph": torch.compile with CUDA graphs), and the first
  steps' time (capture, compilation);
- the memory floor: the step's least bytes read (`step_bytes_read`) over the card's read bandwidth
  (`calibrate_bandwidth`), and the step's time as a multiple of it.

Not the measurement (no energy, synchronised host timing of one run); a check and a timing probe.

usage: python scripts/gpu_decode_check.py --out DIR [--variants a,b] [--steps 64]
writes DIR/decode_check.json and DIR/decode_check.md
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import attnlib
from attnlib.decode import Decoder, cache_bytes_per_token, cache_kind, step_bytes_read

MODES = ("eager", "cudagraph", "graph")
from attnlib.experiments.training import failure_status
from attnlib.measurement import calibrate_bandwidth
from attnlib.model import causal_hidden_states
from attnlib.provenance import provenance

PROMPT, CHECK_STEPS = 512, 32


def check(variant: str, steps: int, bandwidth_gb_s: float) -> dict:
    row: dict = {"variant": variant}
    try:
        cache_kind(variant)
        torch.manual_seed(0)
        model = attnlib.build_model(variant).cuda().to(torch.bfloat16).eval()
        ids = torch.randint(0, 50257, (1, PROMPT + CHECK_STEPS), device="cuda",
                            generator=torch.Generator("cuda").manual_seed(0))
        with torch.no_grad():
            full = model.lm_head(causal_hidden_states(model, ids)).float()
        reference = full[:, PROMPT - 1:PROMPT + CHECK_STEPS - 1]  # the positions decoded
        for mode in ("eager", "cudagraph"):
            decoder = Decoder(model, batch_size=1, max_len=PROMPT + CHECK_STEPS, mode=mode)
            decoded = [decoder.prefill(ids[:, :PROMPT])[:, -1]]
            decoded += [decoder.step(ids[:, t:t + 1]).clone() for t in range(PROMPT, PROMPT + CHECK_STEPS - 1)]
            decoded = torch.stack(decoded, dim=1).float()
            row[f"{mode}_max_rel_err"] = ((decoded - reference).abs().max() / reference.abs().max()).item()
            row[f"{mode}_argmax_agree"] = (decoded.argmax(-1) == reference.argmax(-1)).float().mean().item()
        row["cache_bytes_per_token"] = cache_bytes_per_token(model, torch.bfloat16)
        for mode in MODES:
            torch._dynamo.reset()
            decoder = Decoder(model, batch_size=1, max_len=PROMPT + steps + 8, mode=mode)
            token = decoder.prefill(ids[:, :PROMPT])[:, -1:].argmax(-1)
            start = time.perf_counter()
            for _ in range(3):  # compilation and graph recording land here
                token = decoder.step(token).argmax(-1, keepdim=True)
            torch.cuda.synchronize()
            first_s = time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(steps):
                token = decoder.step(token).argmax(-1, keepdim=True)
            torch.cuda.synchronize()
            row[f"{mode}_ms_per_step"] = 1e3 * (time.perf_counter() - start) / steps
            row[f"{mode}_first_steps_s"] = first_s
        floor_s = step_bytes_read(model, 1, PROMPT + steps // 2, torch.bfloat16) / (bandwidth_gb_s * 1e9)
        row["floor_ms_per_step"] = 1e3 * floor_s
        for mode in MODES:
            row[f"{mode}_floor_multiple"] = row[f"{mode}_ms_per_step"] / row["floor_ms_per_step"]
        row["status"] = "ok"
    except Exception as error:  # which variants fail, and why, is the point
        row["status"], row["error"] = failure_status(error), f"{type(error).__name__}: {str(error)[:500]}"
    torch._dynamo.reset()
    torch.cuda.empty_cache()
    return row


def markdown(rows: list[dict], bandwidth: dict) -> str:
    lines = [f"# Decode check ({torch.cuda.get_device_name()})", "",
             f"GPT-2 small in bf16, batch 1, prompt {PROMPT}; read bandwidth {bandwidth['gb_per_s']:.0f} GB/s "
             f"(`calibrate_bandwidth`). Correctness over {CHECK_STEPS} teacher-forced positions.", "",
             "| variant | status | max rel. err (eager, cudagraph) | greedy agree | cache B/token | "
             + " | ".join(f"{m} ms/step (first steps s)" for m in MODES) + " | floor ms | x floor (cudagraph) |",
             "|---|---|---|---|---|" + "---|" * len(MODES) + "---|---|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['variant']} | {r['status']}: {r['error'][:80]} |" + " |" * (len(MODES) + 5))
            continue
        lines.append(f"| {r['variant']} | ok | {r['eager_max_rel_err']:.2e}, {r['cudagraph_max_rel_err']:.2e} | "
                     f"{r['eager_argmax_agree']:.3f}, {r['cudagraph_argmax_agree']:.3f} | {r['cache_bytes_per_token']:,} | "
                     + " | ".join(f"{r[f'{m}_ms_per_step']:.2f} ({r[f'{m}_first_steps_s']:.1f})" for m in MODES)
                     + f" | {r['floor_ms_per_step']:.3f} | {r['cudagraph_floor_multiple']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", default=",".join(attnlib.VARIANTS))
    parser.add_argument("--steps", type=int, default=64)
    args = parser.parse_args()
    origin = provenance()  # before any GPU work: a malformed $ATTNLIB_COMMIT fails here
    if not torch.cuda.is_available():
        raise SystemExit("gpu_decode_check: no CUDA device; this script runs on the GPU machine")
    variants = [attnlib.get_variant(v).name for v in args.variants.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    bandwidth = calibrate_bandwidth(seconds=3.0).to_dict()
    rows = []
    for variant in variants:
        rows.append(check(variant, args.steps, bandwidth["gb_per_s"]))
        print(json.dumps(rows[-1]), flush=True)
    (args.out / "decode_check.json").write_text(json.dumps(
        {"provenance": origin, "bandwidth": bandwidth, "rows": rows}, indent=1, default=str))
    (args.out / "decode_check.md").write_text(markdown(rows, bandwidth))
    print(markdown(rows, bandwidth))


if __name__ == "__main__":
    main()

"""Benchmark (issue 4), one job: training throughput of the attnlib harness against a plain loop.

Plain loop: `transformers.GPT2LMHeadModel` (GPT-2 small, `attn_implementation="sdpa"`), the same batches
(batch 16 x 512 from the prepared dataset), bf16 autocast, fused AdamW, gradient clipping. Harness:
`attnlib.train.Trainer` for variant `sdpa` (eager) inside an `attnlib.measure` window. Seven interleaved pairs of
~5 s each; the figure is the median of the pairs' tokens/s ratios (target >= 0.97).
Then one compiled trial through `run_trial` (the paper profile's path with torch.compile), to record its
compilation time. Writes harness_throughput.{json,md} and the trial's JSON to --out.

usage: python scripts/gpu_harness_throughput.py --out DIR
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from attnlib.data import prepare_data
from attnlib import measure
from attnlib.pipeline import load_profile
from attnlib.train import Trainer, run_trial

PAIRS, SECONDS = 7, 5.0


def plain_loop(data, steps_hint: int):
    torch.manual_seed(1234)
    config = GPT2Config(attn_pdrop=0.0, use_cache=False)
    config._attn_implementation = "sdpa"
    model = GPT2LMHeadModel(config).cuda().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    order = torch.randperm(len(data.train_ids), generator=torch.Generator().manual_seed(1234))
    position = 0

    def step() -> None:
        nonlocal position
        if position + 16 > len(order):
            position = 0
        idx = order[position:position + 16]
        position += 16
        ids, labels = data.train_ids[idx].cuda(non_blocking=True), data.train_labels[idx].cuda(non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def timed(step, n: int) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        step()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=Path(".cache"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_harness_throughput: no CUDA device")
    args.out.mkdir(parents=True, exist_ok=True)
    config = load_profile("paper").train_config("sdpa", "eager")
    data = prepare_data(config.dataset, config.seq_len, args.cache, config.max_documents)
    plain = plain_loop(data, 0)
    trainer = Trainer(config, data, torch.device("cuda"), total_steps=10**6)
    for _ in range(10):
        plain()
        trainer.step()
    n = max(1, round(SECONDS / (timed(plain, 5) / 5)))
    tokens = n * config.tokens_per_step
    plain_tps, harness_tps = [], []
    for i in range(PAIRS):
        plain_tps.append(tokens / timed(plain, n))
        with measure(f"harness {i}", tokens=tokens) as window:
            for _ in range(n):
                trainer.step()
        harness_tps.append(window.result.tokens_per_s)
        print(f"pair {i}: plain {plain_tps[-1]:.0f} tok/s, harness {harness_tps[-1]:.0f} tok/s", flush=True)
    ratios = [h / p for h, p in zip(harness_tps, plain_tps)]
    del trainer, plain
    torch.cuda.empty_cache()

    compiled = run_trial(load_profile("paper").train_config("sdpa", "compile"), 0, args.out / "sdpa__compile__trial0.json",
                         args.cache, progress=False)
    report = {
        "steps_per_window": n, "plain_tokens_per_s": plain_tps, "harness_tokens_per_s": harness_tps,
        "ratio_median": statistics.median(ratios), "ratios": ratios, "device": torch.cuda.get_device_name(),
        "data": data.info,
        "compiled_trial": {k: compiled.get(k) for k in ("status", "error", "timing", "steps")}
        | {"tokens_per_s": (compiled.get("measurement") or {}).get("tokens_per_s"),
           "j_per_token": (compiled.get("measurement") or {}).get("j_per_token")},
    }
    (args.out / "harness_throughput.json").write_text(json.dumps(report, indent=1))
    md = (f"# Harness throughput vs a plain loop on {report['device']}\n\n"
          f"GPT-2 small, sdpa, batch 16 x 512, bf16, fused AdamW, {PAIRS} interleaved pairs of {n} steps.\n\n"
          f"| plain loop tokens/s (median) | harness tokens/s (median) | harness / plain (median of pairs) | target |\n"
          f"|---|---|---|---|\n| {statistics.median(plain_tps):,.0f} | {statistics.median(harness_tps):,.0f} | "
          f"{report['ratio_median']:.3f} | >= 0.97 |\n\n"
          f"Compiled trial (run_trial, sdpa, torch.compile): status {compiled['status']}, "
          f"first step (compilation) {compiled.get('timing', {}).get('first_step_s', float('nan')):.1f} s, "
          f"{report['compiled_trial']['tokens_per_s'] or float('nan'):,.0f} tokens/s.\n")
    (args.out / "harness_throughput.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()

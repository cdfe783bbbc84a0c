"""Quick probe before a long run: does each variant train in a mode and compile scope, how long does its first
step (compilation, CUDA-graph recording) take, and roughly how fast is it? Not a measurement: no energy, one short
synchronised timing. Prints one line per variant as it goes and writes DIR/mode_probe.json.

usage: python scripts/gpu_mode_probe.py --out DIR [--variants a,b] [--mode graph] [--scope block] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import attnlib
from attnlib.data import TokenData
from attnlib.experiments.training import TrainConfig, Trainer
from attnlib.experiments.training import failure_status
from attnlib.provenance import provenance

BATCH, SEQ_LEN = 16, 512


def probe(variant: str, mode: str, scope: str, data: TokenData, steps: int) -> dict:
    row = {"variant": variant, "mode": mode, "compile_scope": scope}
    try:
        trainer = Trainer(TrainConfig(variant=variant, mode=mode, compile_scope=scope, seq_len=SEQ_LEN,
                                      batch_size=BATCH, seed=0), data, torch.device("cuda"), total_steps=10**6)
        start = time.perf_counter()
        trainer.step().item()
        row["first_step_s"] = time.perf_counter() - start
        for _ in range(3):
            trainer.step()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            loss = trainer.step()
        loss.item()
        row["tokens_per_s"] = steps * BATCH * SEQ_LEN / (time.perf_counter() - start)
        row["status"] = "ok"
    except Exception as error:  # the probe's point: which variants fail, and why
        row["status"], row["error"] = failure_status(error), f"{type(error).__name__}: {str(error)[:500]}"
    torch._dynamo.reset()
    torch.cuda.empty_cache()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", default=",".join(attnlib.VARIANTS))
    parser.add_argument("--mode", default="graph")
    parser.add_argument("--scope", default="block")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    origin = provenance()  # before any GPU work: a malformed $ATTNLIB_COMMIT fails here
    if not torch.cuda.is_available():
        raise SystemExit("gpu_mode_probe: no CUDA device; this script runs on the GPU machine")
    args.out.mkdir(parents=True, exist_ok=True)
    tokens = torch.randint(0, 50257, (512, SEQ_LEN), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    data = TokenData(tokens, tokens, tokens[:64], tokens[:64], None)
    rows = []
    for variant in args.variants.split(","):
        rows.append(probe(variant, args.mode, args.scope, data, args.steps))
        print(json.dumps(rows[-1]), flush=True)
        (args.out / "mode_probe.json").write_text(json.dumps({"provenance": origin, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()

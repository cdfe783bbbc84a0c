"""Does attnlib train as fast as the loop a user writes? One process, one GPU, side by side.

Candidates of one model family (`--arch`): GPT-2 small (124M) at B 16 x T 512, or the llama family at
Llama-3.2-1B's shape at B 4 x T 2048; bf16 autocast, fused AdamW, gradient clipping 1.0, the same random-token
batches (resident on the GPU), attention dropout 0 in both models:
- plain/{eager,compile,graph}: transformers' own model (`GPT2LMHeadModel` or `LlamaForCausalLM`,
  attn_implementation="sdpa"), `loss = model(ids, labels=ids).loss`; compile = `torch.compile(model)`, graph =
  `mode="reduce-overhead"`.
- attnlib/{eager,compile,graph}: `attnlib.experiments.training.Trainer` with the `sdpa` variant in that mode;
  `.../compile-block`, `.../graph-block`: the same with `compile_scope="block"` (one block compiled, shared);
  `.../compile-nested`, `.../graph-nested`: `compile_scope="nested"` (one whole-model graph, the block compiled once).
The time of each candidate's first step (compilation, CUDA-graph recording) is recorded as `first_step_s`.
Each candidate is warmed up once (compilation included), then measured in `--trials` rounds of `--window-s`
windows, each round in a fresh random order (`attnlib.measurement.run_trials`). Candidates separated by ";" form
groups, measured one after another with the previous group's models freed: four 1B models with their AdamW state
(20 GB each) do not fit one card, two do, so the llama family's default pairs each loop with the other per mode.

usage: python scripts/gpu_compile_parity.py --out DIR [--arch gpt2|llama] [--trials 5] [--window-s 5]
                                           [--candidates a,b,...[;c,d,...]]
writes DIR/compile_parity.json and DIR/compile_parity.md (DIR/llama_parity.* for the llama family)
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path

from dataclasses import dataclass
from typing import Callable

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from attnlib.archs.llama import LLAMA_3_2_1B
from attnlib.data import TokenData
from attnlib.experiments.training import TrainConfig, Trainer
from attnlib.measurement import Candidate, measure, measure_idle, run_trials
from attnlib.measurement.trials import TrialsResult
from attnlib.model import DEFAULTS
from attnlib.provenance import provenance


@dataclass(frozen=True)
class Setup:
    """One family's side-by-side: its shape of step, the model the plain loop builds and the candidates measured
    by default (";" separates groups that are measured one after another)."""

    batch: int
    seq_len: int
    vocab: int
    plain_model: Callable[[], torch.nn.Module]
    title: str
    candidates: str


SETUPS = {
    "gpt2": Setup(16, 512, 50_257, lambda: GPT2LMHeadModel(GPT2Config(**{**DEFAULTS, "use_cache": False},
                                                                       attn_implementation="sdpa")), "GPT-2 small",
                  "plain/eager,plain/compile,plain/graph,attnlib/eager,attnlib/compile,attnlib/graph,"
                  "attnlib/compile-block,attnlib/graph-block"),
    "llama": Setup(4, 2048, 128_256, lambda: LlamaForCausalLM(LlamaConfig(**LLAMA_3_2_1B, attn_implementation="sdpa")),
                   "Llama-3.2-1B's shape", "plain/eager,attnlib/eager;plain/compile,attnlib/compile-block"),
}


def plain_loop(mode: str, setup: Setup, batches, window_s: float):
    """The loop a user writes around the Hugging Face model."""
    torch.manual_seed(0)
    model = setup.plain_model().cuda().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    forward = model if mode == "eager" else torch.compile(model, mode="reduce-overhead" if mode == "graph" else None)

    def step() -> torch.Tensor:
        ids = next(batches)
        if mode == "graph":
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = forward(ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return timed(step, window_s, setup)


def attnlib_loop(mode: str, arch: str, setup: Setup, data: TokenData, window_s: float):
    mode, _, scope = mode.partition("-")
    config = TrainConfig(variant="sdpa", arch=arch, mode=mode, seq_len=setup.seq_len, batch_size=setup.batch, seed=0,
                         compile_scope=scope or "model")
    trainer = Trainer(config, data, torch.device("cuda"), total_steps=10**6)
    return timed(trainer.step, window_s, setup)


def first_step_s(step) -> float:
    """Seconds of the first call (compilation lands here), synchronised."""
    start = time.perf_counter()
    step()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def timed(step, window_s: float, setup: Setup):
    """A candidate's run: steps until `window_s` has passed; the window's exit synchronises."""

    def run(window: measure) -> None:
        if window is None:  # the first step, outside any window
            step()
            return
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < window_s:
            step()
            steps += 1
        window.add_work(tokens=steps * setup.batch * setup.seq_len)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--arch", choices=sorted(SETUPS), default="gpt2")
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--window-s", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=20261123)
    parser.add_argument("--candidates", help="loop/mode names, comma-separated; ';' between groups measured one "
                        "after another (default: the family's own, see SETUPS)")
    args = parser.parse_args()
    origin = provenance()  # before any GPU work: a malformed $ATTNLIB_COMMIT fails here
    if not torch.cuda.is_available():
        raise SystemExit("gpu_compile_parity: no CUDA device; this script runs on the GPU machine")
    args.out.mkdir(parents=True, exist_ok=True)
    setup, name_of = SETUPS[args.arch], "compile_parity" if args.arch == "gpt2" else f"{args.arch}_parity"
    generator = torch.Generator(device="cuda").manual_seed(0)
    tokens = torch.randint(0, setup.vocab, (4096 * 512 // setup.seq_len, setup.seq_len), device="cuda",
                           generator=generator)
    data = TokenData(tokens, tokens, tokens[:64], tokens[:64], {"dataset": "random tokens"})

    def plain_batches():
        while True:
            for start in range(0, len(tokens) - setup.batch + 1, setup.batch):
                yield tokens[start:start + setup.batch]

    idle = measure_idle(3.0)
    names, compile_s = [], {}
    result = TrialsResult(seed=args.seed)
    for group in (args.candidates or setup.candidates).split(";"):
        candidates = []
        for name in group.split(","):
            loop, mode = name.split("/")
            candidates.append(Candidate(name, plain_loop(mode, setup, plain_batches(), args.window_s) if loop == "plain"
                                        else attnlib_loop(mode, args.arch, setup, data, args.window_s)))
            compile_s[name] = first_step_s(lambda: candidates[-1].run(None))
            print(f"{name}: first step {compile_s[name]:.1f} s", flush=True)
        measured = run_trials(candidates, warmup=1, trials=args.trials, seed=args.seed, idle=idle, codecarbon=False)
        result.trials.update(measured.trials)
        result.orders += measured.orders
        names += [c.name for c in candidates]
        candidates.clear()  # the group's models, optimizers and compiled graphs go before the next group's
        torch._dynamo.reset()
        gc.collect()
        torch.cuda.empty_cache()
    (args.out / f"{name_of}.json").write_text(json.dumps(
        {"provenance": origin, "arch": args.arch, "idle_w": idle.power_w, "first_step_s": compile_s,
         **result.to_dict()}, indent=1, default=str))

    lines = [f"# Compiled training at a user's speed ({torch.cuda.get_device_name()})", "",
             f"{setup.title}, B {setup.batch} x T {setup.seq_len}, bf16, fused AdamW, clip 1.0; "
             f"{args.trials} rounds of "
             f"{args.window_s:g} s windows in random order (seed {args.seed}); mean ± 95% CI, spread = "
             "(max - min) / max over the trials.", "",
             "| loop | mode | tok/s | mJ/token | spread % | attnlib / plain tok/s | first step s |",
             "|---|---|---|---|---|---|---|"]
    summary = {name: result.summary(name) for name in names}
    for name in names:
        loop, mode = name.split("/")
        s = summary[name]
        tps = [m.tokens_per_s for m in result.trials[name] if m.tokens_per_s]
        jpt = s["gpu_j_per_token"]
        if not tps or jpt.mean is None:
            lines.append(f"| {loop} | {mode} | failed: {({m.error for m in result.trials[name]})} | | | | |")
            continue
        plain = summary.get(f"plain/{mode.partition('-')[0]}")
        ratio = s["tokens_per_s"].mean / plain["tokens_per_s"].mean if loop == "attnlib" and plain else None
        lines.append(f"| {loop} | {mode} | {s['tokens_per_s'].mean:,.0f} ± {s['tokens_per_s'].ci95 or 0:,.0f} | "
                     f"{1e3 * jpt.mean:.3f} ± {1e3 * (jpt.ci95 or 0):.3f} | {100 * (1 - min(tps) / max(tps)):.1f} | "
                     f"{'' if ratio is None else f'{ratio:.3f}'} | {compile_s[name]:.1f} |")
    md = "\n".join(lines) + "\n"
    (args.out / f"{name_of}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()

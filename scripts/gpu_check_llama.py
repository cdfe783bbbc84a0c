"""GPU check of every variant on the llama family, one job: correctness in bf16 and the kernel that really ran.

Per variant (the key/value head axis: sdpa at the native 8, mha at 32, mqa at 1), a Llama-3.2-1B-shaped decoder cut to
`--layers` layers (width 2048, 32 query heads of 64, SwiGLU 8192, RoPE with llama3 scaling; a vocabulary of 32,768 so
that the CPU reference stays small), forward + backward on 1 x 2048 tokens under bf16 autocast on CUDA, against an
fp32 reference of the same weights on the CPU: relative error of the logits, cosine of the first layer's attention
projection gradients (each projection its own block: a kernel that dropped one block's gradient fails that one),
and the CUDA kernels of one profiled pass, named by family. `sdpa`, `mha` and `mqa` are also held to
transformers' own `LlamaForCausalLM` with its sdpa attention, on the GPU, same weights. Writes `llama_check.json` and
`llama_check.md`; each row names the card and commit it ran on. Resumable: run again, it checks only the variants
without a passing row and keeps the others' rows.

usage: python scripts/gpu_check_llama.py --out results/gpu [--variants a,b] [--layers 2]
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch
import transformers

import attnlib
from attnlib.archs import arch_of
from attnlib.hf_check import relative_error
from attnlib.provenance import attnlib_commit, library_versions
from gpu_check_variants import KERNEL_FAMILIES, profile_kernels  # the GPT-2 check's, beside this file

SEQ_LEN, VOCAB = 2048, 32_768
SAME_AS_TRANSFORMERS = ("sdpa", "mha", "mqa")  # Llama's own attention with sdpa's core: held to transformers' too


def cases(variants: list[str]) -> list[tuple[str, dict]]:
    """(variant, build overrides): every variant with a llama form, at its own key/value head count (the native 8;
    32 for mha, 1 for mqa)."""
    return [(name, {}) for name in variants if "llama" not in attnlib.VARIANTS[name].unsupported]


def forward_backward(model: torch.nn.Module, tokens: torch.Tensor, bf16: bool) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        out = model(tokens, labels=tokens)
    out.loss.backward()
    return out.logits.detach().float().cpu()


def projection_grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The first layer's attention projections' weight gradients, one block each."""
    attn = arch_of(model.config).attention_modules(model)[0]
    return {name: module.weight.grad.detach().float().cpu().flatten() for name, module in attn.named_children()
            if isinstance(module, torch.nn.Linear)}


def check(name: str, overrides: dict, layers: int, tokens: torch.Tensor) -> dict:
    torch.manual_seed(0)
    model = attnlib.build_model(name, arch="llama", seq_len=SEQ_LEN, num_hidden_layers=layers, vocab_size=VOCAB,
                                bos_token_id=None, eos_token_id=None, **overrides).eval()
    ref_logits = forward_backward(model, tokens, bf16=False)  # CPU fp32 reference
    ref_grads = projection_grads(model)
    model.cuda()
    logits = forward_backward(model, tokens.cuda(), bf16=True)
    grads = projection_grads(model)
    row = {"variant": name, **overrides, "num_key_value_heads": model.config.num_key_value_heads,
           "kernel_declared": attnlib.VARIANTS[name].kernel("cuda"),
           "attention_params_per_layer": attnlib.attention_parameters(model) // layers,
           "logits_rel_err_vs_fp32_same_weights": relative_error(logits, ref_logits),
           "grad_cosine_vs_fp32": {k: torch.nn.functional.cosine_similarity(grads[k], ref_grads[k], dim=0).item()
                                   for k in grads},
           "finite": bool(torch.isfinite(logits).all())}
    if name in SAME_AS_TRANSFORMERS:  # transformers' own attention on the same weights, on the GPU
        theirs = transformers.LlamaForCausalLM(model.config).cuda().eval()
        theirs.load_state_dict(model.state_dict())
        theirs.set_attn_implementation("sdpa")
        row["logits_rel_err_vs_transformers_sdpa"] = relative_error(logits, forward_backward(theirs, tokens.cuda(), True))
        del theirs
    kernels = profile_kernels(model, tokens.cuda())
    row["kernels_ran"] = kernels
    row["attention_kernels"] = sorted({family for key, family in KERNEL_FAMILIES.items() for k in kernels if key in k})
    row["ok"] = (row["finite"] and row["logits_rel_err_vs_fp32_same_weights"] < 2e-2
                 and min(row["grad_cosine_vs_fp32"].values()) > 0.99)
    del model
    torch.cuda.empty_cache()
    return row


def failure(name: str, overrides: dict, error: Exception) -> dict:
    """A failed check as a row with its reason: the head of the message and its tail, where Triton names the cause."""
    message = f"{type(error).__name__}: {error}"
    return {"variant": name, **overrides, "ok": False,
            "error": message if len(message) <= 1200 else f"{message[:400]} ... {message[-800:]}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", help="default: every variant without a passing row in OUT/llama_check.json")
    parser.add_argument("--layers", type=int, default=2)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check_llama: needs a CUDA device")
    path = args.out / "llama_check.json"
    earlier = json.loads(path.read_text()) if path.exists() else None
    if earlier is not None and earlier["layers"] != args.layers:
        raise SystemExit(f"gpu_check_llama: {path} checked {earlier['layers']} layers; give --out another folder")
    kept = {r["variant"]: r for r in earlier["rows"]} if earlier else {}
    names = ([v.strip() for v in args.variants.split(",")] if args.variants
             else [n for n in attnlib.VARIANTS if not kept.get(n, {}).get("ok")])
    here = {"device": torch.cuda.get_device_name(), "attnlib_commit": attnlib_commit()}
    tokens = torch.randint(0, VOCAB, (1, SEQ_LEN), generator=torch.Generator().manual_seed(1))
    for name, overrides in cases(names):
        try:
            row = check(name, overrides, args.layers, tokens)
        except Exception as error:  # a failure is a row with its reason
            row = failure(name, overrides, error)
        kept[name] = {**row, **here, "versions": library_versions(), "python": platform.python_version()}
        print(json.dumps({k: v for k, v in row.items() if k != "kernels_ran"}), flush=True)
    rows = [kept[n] for n in attnlib.VARIANTS if n in kept]  # the registry's order
    unsupported = {n: s.unsupported["llama"] for n, s in attnlib.VARIANTS.items() if "llama" in s.unsupported}
    record = {"layers": args.layers, "seq_len": SEQ_LEN, "vocab": VOCAB, "rows": rows, "unsupported": unsupported}
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    lines = ["# The llama family's variants in bf16", "",
             f"{args.layers} layers of Llama-3.2-1B's shape, 1 x {SEQ_LEN} tokens, forward + backward; reference: "
             "fp32 on the CPU, same weights. Each row's card and commit are in llama_check.json.", "",
             "| variant | KV heads | ok | logits rel. err | min grad cosine | attention kernels | params/layer | card |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cosine = min(r["grad_cosine_vs_fp32"].values()) if "grad_cosine_vs_fp32" in r else None
        error = r.get("error", "").replace("\n", " ").replace("|", "/")[:300]
        lines.append(f"| {r['variant']} | {r.get('num_key_value_heads', '')} | {r['ok']} | "
                     f"{r.get('logits_rel_err_vs_fp32_same_weights', error)} | {cosine} | "
                     f"{', '.join(r.get('attention_kernels', []))} | {r.get('attention_params_per_layer', '')} | "
                     f"{r['device']} |")
    lines += ["", "Without a llama form: " + "; ".join(f"{n}: {why}" for n, why in unsupported.items())]
    (args.out / "llama_check.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

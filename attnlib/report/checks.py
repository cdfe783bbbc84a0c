"""The GPU checks that come before any timing, as the paper shows them: the llama family's bf16 check
(`scripts/gpu_check_llama.py`: each variant against fp32 on the CPU, same weights, with the kernel the profiler saw
run) and the drop-in functions' table (`scripts/gpu_check_hf_functions.py`: attnlib's attention functions inside
other transformers causal LMs). Both are read from `results/gpu/`; a check not yet run gives a table that says so
and macros that read "n/a"."""

from __future__ import annotations

import json
from pathlib import Path

from . import latex


def read_check(path: Path) -> dict:
    """A check's JSON (`{"rows": [...], ...}`), or no rows where it has not been run."""
    return json.loads(path.read_text()) if path.exists() else {"rows": []}


def compared(rows: list[dict]) -> list[dict]:
    """The rows that ran to the comparison (a row that failed before it carries only its error)."""
    return [r for r in rows if "logits_rel_err_vs_fp32_same_weights" in r]


def llama_check_table(check: dict) -> str:
    """Per llama variant: its key/value heads, attention parameters per layer, bf16 logits' relative error and the
    smallest projection-gradient cosine against fp32 on the CPU (same weights), and the attention kernel that ran;
    a variant that failed before the comparison shows its error, one without a llama form a row that says so."""
    rows = [[r["variant"], str(r["num_key_value_heads"]), f"{r['attention_params_per_layer']:,}",
             latex.fmt(r["logits_rel_err_vs_fp32_same_weights"], ".2f", 100),
             latex.fmt(min(r["grad_cosine_vs_fp32"].values()), ".5f"),
             ", ".join(r.get("attention_kernels") or ["n/a"]) + ("" if r.get("ok") else " (failed)")]
            if "logits_rel_err_vs_fp32_same_weights" in r else
            [r["variant"], "--", "--", "--", "--", f"failed: {r.get('error', 'no reason recorded')[:80]}"]
            for r in check["rows"]]
    rows += [[variant, "--", "--", "--", "--", "no llama form (Section~\\ref{sec:method})"]
             for variant in sorted(check.get("unsupported", {}))]
    if not rows:
        rows = [["not yet run", "", "", "", "", ""]]
    return latex.booktabs(["variant", "KV heads", "attention params / layer", "logits error (\\%)",
                           "min.\\ grad cosine", "attention kernel that ran"], rows, "lrrrrl")


def check_macros(llama: dict, drop_in: dict) -> dict[str, str]:
    """The checks' facts the text quotes: how many llama variants pass and on which card(s), their error range, and
    the drop-in table's cells (the model's own result, an error naming the function, failures)."""
    rows, cells = llama["rows"], drop_in["rows"]
    errors = [r["logits_rel_err_vs_fp32_same_weights"] for r in compared(rows)]
    cosines = [min(r["grad_cosine_vs_fp32"].values()) for r in compared(rows)]
    failed = sorted({f"{c['function']} ({c['case'].replace('_', ' ')})" for c in cells if not c["ok"]})
    return {
        "CheckLlamaPassed": f"{sum(bool(r.get('ok')) for r in rows)} of {len(rows)}" if rows else "n/a",
        "CheckLlamaCards": ", ".join(sorted({r["device"] for r in rows})) or "n/a",
        "CheckLlamaLogitsErrorPct": latex.span(min(errors), max(errors), ".2f", 100) if errors else "n/a",
        "CheckLlamaMinCosine": latex.fmt(min(cosines), ".5f") if cosines else "n/a",
        "CheckLlamaLayers": str(llama.get("layers", "n/a")),
        "CheckLlamaSeqLen": latex.fmt(llama.get("seq_len"), ",.0f"),
        "DropInPassed": f"{sum(c['ok'] for c in cells)} of {len(cells)}" if cells else "n/a",
        "DropInSame": str(sum(c["status"] == "same" for c in cells)) if cells else "n/a",
        "DropInNamedErrors": str(sum(c["status"] == "named error" for c in cells)) if cells else "n/a",
        "DropInModels": str(len({c["family"] for c in cells})) if cells else "n/a",
        "DropInModelList": ", ".join(dict.fromkeys(c["family"] for c in cells)) or "n/a",
        "DropInFunctions": str(len({c["function"] for c in cells})) if cells else "n/a",
        "DropInCases": str(len({c["case"] for c in cells})) if cells else "n/a",
        "DropInCard": drop_in.get("device", "n/a"),
        "DropInFailures": "; ".join(failed) if failed else "none",
    }

"""The GPU checks as the paper shows them (`attnlib.report.checks`): the llama family's bf16 table and the drop-in
table's counts, from the scripts' JSON; a check not yet run says so instead of printing zeros."""

from __future__ import annotations

import json

from attnlib.report.checks import check_macros, llama_check_table, read_check


def llama_row(variant: str, heads: int, error: float, cosine: float, ok: bool = True) -> dict:
    return {"variant": variant, "num_key_value_heads": heads, "attention_params_per_layer": 10485760,
            "logits_rel_err_vs_fp32_same_weights": error, "grad_cosine_vs_fp32": {"q_proj": 1.0, "k_proj": cosine},
            "attention_kernels": ["cuDNN fused SDPA"], "ok": ok, "device": "NVIDIA H100 80GB HBM3"}


def cell(family: str, function: str, case: str, status: str, ok: bool = True) -> dict:
    return {"family": family, "function": function, "case": case, "status": status, "ok": ok}


def test_the_checks_give_the_table_and_the_counts_the_text_quotes(tmp_path) -> None:
    llama = {"layers": 2, "seq_len": 2048, "unsupported": {"lsh": "RoPE rotates the shared vector"},
             "rows": [llama_row("sdpa", 8, 0.0116, 0.99987), llama_row("mqa", 1, 0.0122, 0.99990, ok=False),
                      {"variant": "linear", "ok": False, "error": "CompilationError: fla kernel",
                       "device": "NVIDIA H100 80GB HBM3"}]}
    drop_in = {"device": "NVIDIA H200", "rows": [
        cell("llama", "attnlib_sdpa", "padded_left", "same"), cell("llama", "attnlib_fa2", "padded_left", "named error"),
        cell("gpt2", "attnlib_fa2", "generate_static", "unclear error", ok=False)]}
    path = tmp_path / "llama_check.json"
    path.write_text(json.dumps(llama))
    table = llama_check_table(read_check(path))
    assert "10,485,760" in table and "1.16" in table and "0.99987" in table
    assert "cuDNN fused SDPA (failed)" in table and "no llama form" in table
    assert "failed: CompilationError: fla kernel" in table  # failed before the comparison: its error, no numbers
    macros = check_macros(llama, drop_in)
    assert macros["CheckLlamaPassed"] == "1 of 3" and macros["CheckLlamaLogitsErrorPct"] == "1.16--1.22"
    assert macros["CheckLlamaMinCosine"] == "0.99987" and macros["CheckLlamaSeqLen"] == "2,048"
    assert macros["DropInPassed"] == "2 of 3" and macros["DropInSame"] == "1" and macros["DropInNamedErrors"] == "1"
    assert macros["DropInModels"] == "2" and macros["DropInModelList"] == "llama, gpt2"
    assert macros["DropInFailures"] == "attnlib_fa2 (generate static)" and macros["DropInCard"] == "NVIDIA H200"


def test_a_check_not_yet_run_says_so(tmp_path) -> None:
    missing = read_check(tmp_path / "absent.json")
    assert "not yet run" in llama_check_table(missing)
    macros = check_macros(missing, missing)
    assert macros["CheckLlamaPassed"] == macros["DropInPassed"] == macros["DropInCard"] == "n/a"

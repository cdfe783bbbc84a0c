"""GPU check of attnlib's drop-in attention functions inside other transformers causal LMs, in bf16 with the real kernels.

`attnlib.hf_check` on the GPU: tiny random Llama, Qwen2, Mistral (a window shorter than the prompt), GPT-2 and Gemma 2
(soft-capped logits) in bf16 on CUDA; every drop-in function (baseline, sdpa, fa2, cudnn, flex, sliding_window) x
padded left / right, generate with the dynamic and the static cache (each step's logits against a cache-free forward
pass over the same tokens), gradients; each against the model's own attention on the same weights, within bf16's
tolerance, or an error that names the variant. The CPU tests run the same table in fp32 (tests/test_hf_functions.py).
Writes `hf_functions.json` and `hf_functions.md`; a record they hold from another card or commit is kept beside them
as `hf_functions_<card>_<commit>.json` and `.md`, never overwritten.

usage: python scripts/gpu_check_hf_functions.py --out results/gpu
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import re
from pathlib import Path

import torch

from attnlib import VARIANTS
from attnlib.hf_check import CASES, DROP_IN, FAMILIES, check_function, tiny_causal_lm, tolerance
from attnlib.provenance import attnlib_commit, library_versions


def keep_previous(out: Path, record: dict) -> None:
    """Move the record `out` holds, with its table, to names of its own when another card or commit made it."""
    path = out / "hf_functions.json"
    if not path.exists():
        return
    previous = json.loads(path.read_text())
    if (previous.get("device"), previous.get("attnlib_commit")) == (record["device"], record["attnlib_commit"]):
        return  # a rerun of the same code on the same card
    card = re.sub(r"[^a-z0-9]+", "-", str(previous.get("device", "unknown")).lower()).strip("-")
    stem = f"hf_functions_{card}_{str(previous.get('attnlib_commit', 'unknown'))[:12]}"
    for suffix in (".json", ".md"):
        if (out / f"hf_functions{suffix}").exists():
            (out / f"hf_functions{suffix}").rename(out / f"{stem}{suffix}")
    print(f"the previous record ({previous.get('device')}) is kept as {stem}.json", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check_hf_functions: needs a CUDA device")
    rows = []
    for family in FAMILIES:
        model = tiny_causal_lm(family, dtype=torch.bfloat16, device="cuda")
        for name in DROP_IN:
            for row in check_function(model, VARIANTS[name].attn_implementation, family):
                rows.append({**dataclasses.asdict(row), "ok": row.ok})
                print(json.dumps(rows[-1]), flush=True)
    record = {"device": torch.cuda.get_device_name(), "attnlib_commit": attnlib_commit(),
              "versions": library_versions(), "python": platform.python_version(), "dtype": "bfloat16",
              "tolerance": tolerance(model), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    keep_previous(args.out, record)
    (args.out / "hf_functions.json").write_text(json.dumps(record, indent=1) + "\n")
    cell = {(r["family"], r["function"], r["case"]): r for r in rows}
    lines = [f"# attnlib's drop-in functions in other models, bf16 on {record['device']} (attnlib "
             f"{record['attnlib_commit'][:12]})", "",
             f"Each cell: `same` (within {record['tolerance']:g} relative of the model's own attention), `named error` "
             "(refused, naming the variant), or a failure (`differs`, `unclear error`) with its relative difference.",
             "", "| model | function | " + " | ".join(CASES) + " |", "|---|---|" + "---|" * len(CASES)]
    for family in FAMILIES:
        for name in DROP_IN:
            function = VARIANTS[name].attn_implementation
            cells = []
            for case in CASES:
                r = cell[(family, function, case)]
                difference = r["relative_difference"]
                cells.append(r["status"] + (f" ({difference:.1e})" if difference is not None else ""))
            lines.append(f"| {family} | {function} | " + " | ".join(cells) + " |")
    failures = [r for r in rows if not r["ok"]]
    lines += ["", f"{len(rows) - len(failures)} of {len(rows)} cells pass."]
    lines += [f"- {r['family']} / {r['function']} / {r['case']}: {r['status']} {r['detail']}" for r in failures]
    (args.out / "hf_functions.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

"""`python -m attnlib`: the registered variants, the model families they run in, their kernels per device and their
parameters (a family's own values after a colon)."""

from __future__ import annotations

from . import VARIANTS
from .archs import ARCHS


def variant_table() -> str:
    rows = [("variant", "exact", "families", "CUDA kernel", "CPU kernel", "parameters")]
    for spec in VARIANTS.values():
        params = [f"{k}={v}" for k, v in spec.params.items()]
        params += [f"{arch}: " + ", ".join(f"{k}={v}" for k, v in own.items()) for arch, own in spec.arch_params.items()]
        families = ", ".join(a for a in ARCHS if a not in spec.unsupported)
        rows.append((spec.name, "yes" if spec.exact else "no", families, spec.kernel("cuda"), spec.kernel("cpu"),
                     "; ".join(params) or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


if __name__ == "__main__":
    print(variant_table())

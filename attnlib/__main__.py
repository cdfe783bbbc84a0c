"""`python -m attnlib`: the registered variants, their kernels per device and their parameters."""

from __future__ import annotations

from . import VARIANTS


def variant_table() -> str:
    rows = [("variant", "exact", "CUDA kernel", "CPU kernel", "parameters")]
    for spec in VARIANTS.values():
        params = ", ".join(f"{k}={v}" for k, v in spec.params.items()) or "-"
        rows.append((spec.name, "yes" if spec.exact else "no", spec.kernel("cuda"), spec.kernel("cpu"), params))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


if __name__ == "__main__":
    print(variant_table())

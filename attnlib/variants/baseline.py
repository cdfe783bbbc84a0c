"""`baseline`: GPT-2's own eager attention, transformers' `eager` path: the reference every variant is checked against.

Materialises the [B, H, T, T] score matrix, adds the causal mask, softmax, then multiplies by V. Cost: 4 T^2 H D
forward FLOPs actually executed (the masked half is computed too), O(T^2) memory.
"""

from ..registry import VariantSpec, register

register(
    VariantSpec(
        name="baseline",
        description="GPT-2's eager attention (matmul, additive causal mask, softmax, matmul): the reference",
        exact=True,
        kernel=lambda device: "eager (transformers GPT-2 matmul + softmax)",
        builtin_implementation="eager",
        attn_dropout=True,
    )
)

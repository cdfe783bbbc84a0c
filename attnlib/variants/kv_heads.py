"""`mha` and `mqa`: the key/value head count of a family whose attention is natively grouped (Llama).

Llama-3.2-1B shares each of its 8 key/value heads among 4 of its 32 query heads (grouped-query attention, Ainslie et
al., 2023, arXiv:2305.13245). The axis around that native point is the model's own `num_key_value_heads`: 32 is
multi-head attention (Vaswani et al., 2017; every query head its own keys and values, 4x the KV projections and the
KV cache), 1 is multi-query attention (Shazeer, 2019, arXiv:1911.02150; one shared head, an eighth of the native
KV). Both run Llama's own attention module with sdpa's core, so they differ from the `sdpa` row only in that count:
the attention FLOPs are the same, the projections and the cache are not. On GPT-2 the axis is `gqa`'s `n_kv_head`
(GPT-2 small is multi-head already), so these two have no GPT-2 form.

    >>> model = attnlib.build_model("mqa", arch="llama", num_hidden_layers=2)
    >>> model.config.num_key_value_heads
    1
"""

from __future__ import annotations

from ..registry import VariantSpec, register
from .sdpa import sdpa_attention

_GPT2 = ("GPT-2's key/value head count is the gqa variant's n_kv_head (GPT-2 small is multi-head attention, its "
         "sdpa row; n_kv_head = 1 is multi-query attention)")

def _validate(expected: str):
    def validate(config, seq_len: int) -> None:
        heads = {"mha": config.num_attention_heads, "mqa": 1}[expected]
        if config.num_key_value_heads != heads:
            raise ValueError(f"num_key_value_heads: {expected} has {heads} key/value head(s) here, got "
                             f"{config.num_key_value_heads}; another count is sdpa with num_key_value_heads set")
    return validate


# num_key_value_heads None: one per query head (LlamaConfig's own reading), 32 at Llama-3.2-1B's shape
for name, heads, what in (("mha", None, "multi-head attention: one key/value head per query head (32)"),
                          ("mqa", 1, "multi-query attention: one key/value head shared by all query heads")):
    register(
        VariantSpec(
            name=name,
            description=f"{what} (Llama's num_key_value_heads; native: 8), sdpa's core",
            exact=True,  # exact softmax attention of a different parameterisation
            kernel=lambda device: "sdpa (PyTorch picks flash / mem-efficient / cuDNN / math)",
            attention_function=sdpa_attention,
            attn_dropout=True,
            arch_params={"llama": {"num_key_value_heads": heads}},
            unsupported={"gpt2": _GPT2},
            validate=_validate(name),
        )
    )

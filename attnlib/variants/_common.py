"""Small helpers the variant modules share."""

from __future__ import annotations

import torch
from torch import nn
from transformers import Cache, GPT2Config
from transformers.pytorch_utils import Conv1D


def require_plain_causal(attention_mask: torch.Tensor | None, variant: str) -> None:
    """Kernels pinned to a causal mask cannot honour padding or KV-cache masks: fail instead of ignoring them."""
    if attention_mask is not None:
        raise NotImplementedError(
            f"{variant}: this core computes plain causal self-attention and cannot apply an explicit attention "
            "mask (padding or KV cache); use the 'sdpa' variant for masked inputs"
        )


def repeat_kv(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values `[B, H_kv, S, D]` repeated to the queries' `H` heads for a core that pairs heads one to one
    (grouped-query models: query head h reads key/value head h // (H / H_kv), as transformers' `repeat_kv`)."""
    groups = query.shape[1] // key.shape[1]
    if groups == 1:
        return key, value
    return key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)


def require_self_attention(query: torch.Tensor, key: torch.Tensor, variant: str) -> None:
    """A core over the whole sequence only (no KV cache): fewer queries than keys is decoding, which it cannot do
    from transformers' cache; fail instead of computing something else."""
    if query.shape[-2] != key.shape[-2]:
        raise NotImplementedError(
            f"{variant}: this core attends a sequence to itself and cannot decode from transformers' KV cache "
            f"({query.shape[-2]} queries over {key.shape[-2]} keys); generate with use_cache=False, or decode with "
            "attnlib.decode.Decoder, which keeps the variant's own state"
        )


def layer_cache(kwargs: dict, past_key_values: Cache | None = None) -> Cache | None:
    """The KV cache transformers passes an attention module: `cache=` from 5.25 on, `past_key_values=` before."""
    cache = kwargs.get("cache")
    return cache if cache is not None else past_key_values


def require_no_softcap(kwargs: dict, variant: str) -> None:
    """A model that soft-caps its attention logits (Gemma 2: tanh(s / c) x c) passes `softcap`; a fused core would
    ignore it: fail instead."""
    if kwargs.get("softcap") is not None:
        raise NotImplementedError(
            f"{variant}: this core cannot soft-cap attention logits (softcap={kwargs['softcap']}); use "
            "'attnlib_baseline', which applies it, for this model"
        )


def require_no_window(kwargs: dict, variant: str) -> None:
    """A model whose layer attends within a sliding window passes `sliding_window`; a full causal core would
    ignore it: fail instead."""
    if kwargs.get("sliding_window") is not None:
        raise NotImplementedError(
            f"{variant}: this core computes full causal attention and cannot apply the layer's sliding window "
            f"({kwargs['sliding_window']} tokens); use 'attnlib_sliding_window' or 'sdpa' for this model"
        )


def require_plain_full_causal(attention_mask: torch.Tensor | None, kwargs: dict, variant: str) -> None:
    """A kernel pinned to full causal self-attention: no explicit mask, no sliding window, no soft-capping."""
    require_plain_causal(attention_mask, variant)
    require_no_window(kwargs, variant)
    require_no_softcap(kwargs, variant)


def require_positive(config: GPT2Config, name: str) -> None:
    """`ValueError` naming `name` unless `config.<name>` is an integer >= 1."""
    value = getattr(config, name)
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")


def gpt2_init_(module: nn.Module, config: GPT2Config, residual: bool = False) -> None:
    """GPT-2's initialisation for a projection we add: N(0, 0.02), zero bias; residual outputs scaled by
    1/sqrt(2 n_layer) (the GPT-2 paper's scheme, as transformers applies it to `c_proj`)."""
    std = config.initializer_range / (2 * config.n_layer) ** 0.5 if residual else config.initializer_range
    with torch.no_grad():
        module.weight.normal_(0.0, std)
        if getattr(module, "bias", None) is not None:
            module.bias.zero_()


def gpt2_output_projection(config: GPT2Config) -> tuple[Conv1D, nn.Dropout]:
    """GPT-2's `c_proj` and residual dropout, unchanged, for variants that bring their own input projections."""
    c_proj = Conv1D(config.n_embd, config.n_embd)
    gpt2_init_(c_proj, config, residual=True)
    return c_proj, nn.Dropout(config.resid_pdrop)


def strict_recompiles(limit: int = 64) -> None:
    """Room for `limit` compiled entries per function, and an error past it.

    A process that compiles one function for many shapes or grad modes (the long-context job: 8 lengths, with and
    without autograd; several trainers) passes dynamo's default of 8 entries. Past it dynamo silently runs the
    function eagerly, and eager `flex_attention` materialises the T x T scores (192 GiB at T = 64K).
    """
    import torch._dynamo.config as dynamo_config

    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, limit)
    dynamo_config.fail_on_recompile_limit_hit = True

"""`linear`: causal linear attention (Katharopoulos et al., 2020, arXiv:2006.16236), feature map elu(x) + 1.

    o_i = phi(q_i)^T S_i / (phi(q_i)^T z_i),   S_i = sum_{j<=i} phi(k_j) v_j^T,   z_i = sum_{j<=i} phi(k_j)

computed in chunks of `chunk_size` tokens (any T: a last partial chunk is padded): quadratic inside a chunk, a running [D, D] state between chunks, so
memory is O(T) in sequence length and FLOPs are O(T (chunk_size + D) D) instead of O(T^2 D). On CUDA with
flash-linear-attention installed, fla's Triton chunk kernels compute the numerator (`fla_causal_linear`, a PyTorch
custom op, so that `torch.compile` keeps it inside one graph and CUDA graphs capture it: fla's own
`chunk_linear_attn` is `torch.compiler.disable`d, which splits every layer's graph in two and launches its kernels
from Python) and `normalise` divides by the denominator, as fla's `chunk_linear_attn(normalize=True)` does;
otherwise `chunked_linear_attention` below. `naive_linear_attention` is the quadratic reference the tests hold
both to.

In a RoPE model (the llama family) the core receives queries and keys already rotated by the model, and the feature
map applies to the rotated vectors: position enters phi(q_i)^T phi(k_j) only through them, no longer as the
relative rotation of a softmax score (phi does not commute with the rotation). This is the plain drop-in form; a
model trained with it learns under that positional signal.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GPT2Config

from ..archs import dims_of
from ..registry import VariantSpec, register
from ._common import (repeat_kv, require_no_softcap, require_plain_causal, require_positive,
                      require_self_attention)

try:
    from fla.ops.simple_gla.chunk import chunk_simple_gla_bwd, chunk_simple_gla_fwd
except ImportError:  # optional extra: `pip install attnlib[fla]`
    chunk_simple_gla_fwd = chunk_simple_gla_bwd = None

FLA_CHUNK = 64  # the chunk size of fla's kernels


@torch.library.custom_op("attnlib::fla_causal_linear", mutates_args=())
def fla_causal_linear(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Unnormalised causal linear attention, sum_{j<=i} (q_i . k_j) v_j, of `[B, T, H, D]` inputs: fla's chunk
    kernels (`chunk_simple_gla` with no gate, scale 1), which `chunk_linear_attn` runs before normalising."""
    o, _ = chunk_simple_gla_fwd(q=q.contiguous(), k=k.contiguous(), v=v.contiguous(), g=None, g_gamma=None,
                                scale=1.0, initial_state=None, output_final_state=False, cu_seqlens=None,
                                chunk_size=FLA_CHUNK)
    return o.to(q.dtype)


@fla_causal_linear.register_fake
def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.empty(v.shape, dtype=q.dtype, device=v.device)


@torch.library.custom_op("attnlib::fla_causal_linear_backward", mutates_args=())
def fla_causal_linear_backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                               grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gradients of `fla_causal_linear` with respect to q, k and v: fla's chunk backward kernels."""
    dq, dk, dv, _, _ = chunk_simple_gla_bwd(q=q.contiguous(), k=k.contiguous(), v=v.contiguous(), g=None,
                                            g_gamma=None, initial_state=None, do=grad.contiguous(), dht=None,
                                            scale=1.0, cu_seqlens=None, chunk_size=FLA_CHUNK)
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


@fla_causal_linear_backward.register_fake
def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grad: torch.Tensor):
    # fla allocates contiguous gradients; `empty_like` would copy the strides of non-contiguous inputs (a llama
    # layer's `[B, T, H, D]` views of `[B, H, T, D]` tensors) and mislead the compiled graph's memory plan.
    return tuple(torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (q, k, v))


def _save_inputs(ctx, inputs: tuple, output: torch.Tensor) -> None:
    ctx.save_for_backward(*inputs)


def _fla_causal_linear_grad(ctx, grad: torch.Tensor):
    return fla_causal_linear_backward(*ctx.saved_tensors, grad)


fla_causal_linear.register_autograd(_fla_causal_linear_grad, setup_context=_save_inputs)


def normalise(numerator: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Divide the unnormalised output `[B, T, H, D]` by phi(q_i) . sum_{j<=i} phi(k_j), as fla's
    `normalize_with_z_state` does: the key prefix sum accumulated in float32 and kept in the keys' dtype, 1e-10
    added to the denominator."""
    k_sum = k.float().cumsum(1).to(k.dtype)
    return numerator / ((q * k_sum).sum(-1, keepdim=True) + 1e-10)


def feature_map(x: torch.Tensor) -> torch.Tensor:
    return F.elu(x) + 1.0


def naive_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Reference: the quadratic causal formula on feature-mapped `[B, H, T, D]` inputs; returns `[B, H, T, D]`."""
    scores = q @ k.transpose(-1, -2)  # [B, H, T, T], all > 0
    scores = scores.tril()
    return (scores @ v) / scores.sum(-1, keepdim=True)


def exclusive_cumsum(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum of the entries strictly before each position along `dim`: the inclusive sum shifted by one, starting
    at zero (never `cumsum - x`, whose rounding lets a chunk see a trace of itself)."""
    total = x.cumsum(dim).narrow(dim, 0, x.shape[dim] - 1)
    return torch.cat([torch.zeros_like(x.narrow(dim, 0, 1)), total], dim=dim)


def chunked_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk_size: int,
                             initial: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Chunked causal linear attention on feature-mapped `[B, H, T, D]` inputs, any T.

    `initial`: the sums over tokens before these, S = sum phi(k) v^T `[B, H, D, D]` and z = sum phi(k) `[B, H, D]`
    (float32), e.g. the earlier ranks' when the sequence is split across devices (`attnlib.parallel`).

    A T that chunks do not tile is padded at the end (keys and queries with ones, so every denominator stays
    positive; values with zeros) and cut back: padding comes after every real token, so causality keeps it out
    of the real outputs. Accumulates in at least float32: the prefix sums of phi(k) v^T grow with T, beyond what
    bf16's 8-bit mantissa resolves.
    """
    B, H, T, D = q.shape
    pad = -T % chunk_size
    if pad:
        q, k = (F.pad(t, (0, 0, 0, pad), value=1.0) for t in (q, k))
        v = F.pad(v, (0, 0, 0, pad))
    n = (T + pad) // chunk_size
    dtype = v.dtype
    acc = torch.promote_types(dtype, torch.float32)
    q, k, v = (t.to(acc).reshape(B, H, n, chunk_size, -1) for t in (q, k, v))  # [B, H, n, c, D]
    kv = k.transpose(-1, -2) @ v  # [B, H, n, D, D] per-chunk state increments
    state = exclusive_cumsum(kv, 2)  # what earlier chunks contribute
    normaliser = exclusive_cumsum(k.sum(-2), 2)  # [B, H, n, D]
    if initial is not None:
        state, normaliser = state + initial[0].to(acc).unsqueeze(2), normaliser + initial[1].to(acc).unsqueeze(2)
    intra = (q @ k.transpose(-1, -2)).tril()  # [B, H, n, c, c]
    numerator = intra @ v + q @ state
    denominator = intra.sum(-1) + (q * normaliser.unsqueeze(-2)).sum(-1)
    out = numerator / denominator.unsqueeze(-1)
    return out.reshape(B, H, T + pad, -1)[:, :, :T].to(dtype)


def kernel(device: str) -> str:
    if device == "cuda" and chunk_simple_gla_fwd is not None:
        return "fla chunk kernels (Triton), as chunk_linear_attn"
    return "attnlib chunked_linear_attention (PyTorch)"


def uses_fla(query: torch.Tensor) -> bool:
    """Whether this core runs fla's Triton kernels (a CUDA tensor and fla installed) or attnlib's PyTorch chunks."""
    return query.is_cuda and chunk_simple_gla_fwd is not None


def linear_attention(
    module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
    attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0, **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention core: `[B, H, T, D]` in, `([B, T, H, D], None)` out. `scaling` does not apply:
    the normalisation by phi(q)^T z_i makes the output scale-free."""
    require_plain_causal(attention_mask, "linear")
    require_self_attention(query, key, "linear")
    require_no_softcap(kwargs, "linear")
    key, value = repeat_kv(query, key, value)  # a grouped-query model's key/value heads, one per query head
    q, k = feature_map(query), feature_map(key)
    if uses_fla(query):
        # fla takes [B, T, H, D] of one dtype: under autocast a RoPE model's rotation (fp32 cos/sin) leaves queries
        # and keys in fp32 beside bf16 values, which fla's Triton kernels refuse to compile. Compute in the values'
        # dtype, as autocast casts sdpa's inputs to its own.
        q, k, v = (t.transpose(1, 2).to(value.dtype) for t in (q, k, value))
        return normalise(fla_causal_linear(q, k, v), q, k), None
    return chunked_linear_attention(q, k, value, module.config.chunk_size).transpose(1, 2), None


def attention_flops(config: GPT2Config, seq_len: int) -> float:
    """Forward FLOPs of one layer on one sequence, all heads (D = head_dim, c = chunk_size): inside chunks
    4 D per visible pair, T (c + 1) / 2 pairs; between chunks phi(k)^T v and phi(q) S, 4 D^2 per token."""
    dims = dims_of(config)
    return 4.0 * dims.attention_width * seq_len * ((config.chunk_size + 1) / 2 + dims.head_dim)


def validate(config: GPT2Config, seq_len: int) -> None:
    require_positive(config, "chunk_size")


register(
    VariantSpec(
        name="linear",
        description="causal linear attention, elu(x)+1 feature map, chunked O(T) form",
        exact=False,
        decode_cache="state",
        kernel=kernel,
        params={"chunk_size": 64},
        attention_function=linear_attention,
        attention_flops=attention_flops,
        validate=validate,
    )
)

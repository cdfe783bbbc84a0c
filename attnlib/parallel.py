"""Context parallelism: one sequence split across ranks, each rank computing the attention of its own queries.

Each rank holds a `Shard` of the sequence and gets exactly the single-device output at its positions. The forms
differ in what they exchange:

| form | variants | what a rank receives |
|---|---|---|
| `allgather_attention` | exact softmax: baseline, sdpa, flash, cudnn, flex, gqa | every rank's keys and values (the all-gather form of Llama 3's context parallelism) |
| latent all-gather (`MultiHeadLatentAttention`) | mla | every rank's latent, `kv_lora_rank` numbers a token, up-projected to keys and values on each rank |
| `halo_sliding_window_attention` | sliding_window | the previous rank's last `window - 1` keys and values |
| `carried_state_linear_attention` | linear | the earlier ranks' sums S = sum phi(k) v^T [D, D] and z = sum phi(k) [D] |
| `ring_attention` (PyTorch's `context_parallel`, CUDA only) | sdpa | the other ranks' keys and values, one rank's at a time, merged by their log-sum-exp |

Causal attention gives later positions more work; the "zigzag" layout (rank r holds chunks r and 2W-1-r of 2W, as
PyTorch's `context_parallel` load balancer and Megatron-LM do) evens it out for the all-gather form. The banded
and recurrent forms cost the same per token everywhere and take the "contiguous" layout. lsh has no distributed
form (its buckets are sorted over the whole sequence). gqa's and mla's own modules run their form when
`install_context_parallel` has set their `context_parallel`; GPT-2's module gets it through the attention interface.

Every form takes and returns `[B, H, T_local, D]` like the variant's own core, and runs under any process group:
gloo on CPU (the tests), NCCL on GPUs. Gradients flow back through the exchange (`torch.distributed.nn`), and
every rank's graph uses the gathered tensors (rank 0 through an empty slice or a zero weight), so that every rank
joins the backward collectives.

    shard = Shard.current("zigzag")                  # this process's rank and world size
    q, k, v = (shard.take(t) for t in (q_full, k_full, v_full))
    out = allgather_attention(q, k, v, shard)        # == sdpa(q_full, k_full, v_full, is_causal=True) at my positions
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.bias import causal_lower_right
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from .registry import get_variant
from .variants.flex import flex_masked
from .variants.linear import chunked_linear_attention, feature_map
from .variants.sliding_window import sliding_window_mask_mod

LAYOUTS = ("contiguous", "zigzag")
CONTEXT_PARALLEL = "attnlib_context_parallel"  # the core's name in transformers' AttentionInterface


@dataclass(frozen=True)
class Shard:
    """Which positions of a sequence this rank holds: `layout` over `world` ranks, in process group `group`."""

    rank: int
    world: int
    layout: str = "contiguous"
    group: Any = None  # a torch.distributed process group; None: the default one

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout: one of {LAYOUTS}, got {self.layout!r}")
        if not (isinstance(self.world, int) and self.world >= 1 and 0 <= self.rank < self.world):
            raise ValueError(f"rank, world: need 0 <= rank < world, got rank {self.rank}, world {self.world}")

    @classmethod
    def current(cls, layout: str = "contiguous", group: Any = None) -> "Shard":
        """This process's shard in `group` (one rank of one when torch.distributed is not initialised)."""
        if not (dist.is_available() and dist.is_initialized()):
            return cls(0, 1, layout)
        return cls(dist.get_rank(group), dist.get_world_size(group), layout, group)

    def chunks(self, seq_len: int) -> list[tuple[int, int]]:
        """(start, length) of each chunk this rank holds, in sequence order."""
        parts = self.world if self.layout == "contiguous" else 2 * self.world
        if seq_len % parts:
            raise ValueError(f"seq_len: {seq_len} does not split into {parts} equal chunks "
                             f"({self.layout} layout over {self.world} ranks)")
        size = seq_len // parts
        ids = [self.rank] if self.layout == "contiguous" else [self.rank, 2 * self.world - 1 - self.rank]
        return [(i * size, size) for i in ids]

    def positions(self, seq_len: int, device: torch.device | str | None = None) -> torch.Tensor:
        """The sequence positions this rank holds, in the order of its local tokens."""
        return torch.cat([torch.arange(start, start + n, device=device) for start, n in self.chunks(seq_len)])

    def take(self, full: torch.Tensor, dim: int = -2) -> torch.Tensor:
        """This rank's part of a whole-sequence tensor (sequence along `dim`)."""
        return full.index_select(dim, self.positions(full.shape[dim], full.device))


def _gather(x: torch.Tensor, shard: Shard) -> list[torch.Tensor]:
    """Every rank's `x`, in rank order, differentiable (the backward sums each rank's gradient back to it)."""
    if shard.world == 1:
        return [x]
    return list(dist_nn.all_gather(x.contiguous(), group=shard.group))


def _in_sequence_order(parts: list[torch.Tensor], shard: Shard, seq_len: int) -> torch.Tensor:
    """Every rank's local tokens (`parts`, rank order, sequence along dim -2) as the whole sequence."""
    pieces = []
    for rank, part in enumerate(parts):
        offset = 0
        for start, length in dataclasses.replace(shard, rank=rank).chunks(seq_len):
            pieces.append((start, part.narrow(-2, offset, length)))
            offset += length
    return torch.cat([piece for _, piece in sorted(pieces, key=lambda p: p[0])], dim=-2)


def gather_sequence(x: torch.Tensor, shard: Shard) -> torch.Tensor:
    """Every rank's local tokens of `x` (sequence along dim -2) as the whole sequence, in one differentiable
    all-gather."""
    return _in_sequence_order(_gather(x, shard), shard, x.shape[-2] * shard.world)


def attend_gathered(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, shard: Shard,
                    scale: float | None = None) -> torch.Tensor:
    """Exact causal softmax attention of this rank's queries `[B, H, L, D]` over the whole sequence's keys and
    values `[B, H_kv, T, D]` (H_kv < H is GQA): each local chunk attends to the keys up to its own end under a
    lower-right causal mask, so no work is spent on keys beyond it."""
    outs, offset = [], 0
    for start, length in shard.chunks(keys.shape[-2]):
        end = start + length
        outs.append(F.scaled_dot_product_attention(
            q.narrow(-2, offset, length), keys[..., :end, :], values[..., :end, :],
            attn_mask=causal_lower_right(length, end), scale=scale, enable_gqa=keys.shape[1] != q.shape[1]))
        offset += length
    return torch.cat(outs, dim=-2)


def allgather_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, shard: Shard,
                        scale: float | None = None) -> torch.Tensor:
    """Exact causal attention of this rank's queries over every rank's keys and values (`[B, H_kv, L, D]` each),
    gathered in one collective (`attend_gathered`)."""
    keys, values = gather_sequence(torch.stack([k, v]), shard).unbind(0)
    return attend_gathered(q, keys, values, shard, scale)


def halo_sliding_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, shard: Shard, window: int,
                                  scale: float | None = None) -> torch.Tensor:
    """sliding_window's attention (query i sees keys i - window + 1 ... i) of a contiguous shard: the previous
    rank's last `window - 1` keys and values are prepended as a halo. The exchange is an all-gather of every
    rank's tail, W (window - 1) tokens: a point-to-point pass would move 1/W of that."""
    if shard.layout != "contiguous":
        raise ValueError(f"layout: the halo form needs the contiguous layout, got {shard.layout!r}")
    local, halo = q.shape[-2], window - 1
    if shard.world > 1 and halo > 0:
        if local < halo:
            raise ValueError(f"window: a shard of {local} tokens cannot hold the {halo}-token halo of the next rank")
        tails = torch.stack(_gather(torch.stack([k, v])[..., local - halo:, :], shard))  # [W, 2, B, H, halo, D]
        previous = tails[shard.rank - 1] if shard.rank > 0 else tails[0][..., :0, :]  # rank 0: an empty halo
        k, v = torch.cat([previous[0], k], dim=-2), torch.cat([previous[1], v], dim=-2)
    offset = k.shape[-2] - local
    return flex_masked(q, k, v, scale, sliding_window_mask_mod(window, offset)).transpose(1, 2)


def carried_state_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, shard: Shard,
                                   chunk_size: int) -> torch.Tensor:
    """linear's attention (feature map elu + 1, as `attnlib.variants.linear`) of a contiguous shard: its chunked
    form started from the sums S and z of all earlier ranks' tokens, gathered as one [D, D + 1] block per head."""
    if shard.layout != "contiguous":
        raise ValueError(f"layout: the carried-state form needs the contiguous layout, got {shard.layout!r}")
    phi_q, phi_k = feature_map(q), feature_map(k)
    initial = None
    if shard.world > 1:
        acc = torch.promote_types(v.dtype, torch.float32)
        mine = torch.cat([phi_k.to(acc).transpose(-1, -2) @ v.to(acc), phi_k.to(acc).sum(-2).unsqueeze(-1)], -1)
        earlier = (torch.arange(shard.world, device=q.device) < shard.rank).to(acc)  # rank 0: all zero weights
        carried = torch.einsum("w,w...->...", earlier, torch.stack(_gather(mine, shard)))  # [B, H, D, D + 1]
        initial = carried[..., :-1], carried[..., -1]
    return chunked_linear_attention(phi_q, phi_k, v, chunk_size, initial)


class Form(NamedTuple):
    """A variant's distributed core: `core(q, k, v, shard, scale)` (None: the variant's own module runs its
    distributed path, given the shard), the layout it takes and its name."""

    name: str
    core: Callable[..., torch.Tensor] | None
    layout: str


def context_parallel_form(variant: str, config: Any) -> Form:
    """The distributed form of `variant`'s core; raises `NotImplementedError` with the reason for a variant
    without one."""
    if variant in ("baseline", "sdpa", "flash", "cudnn", "flex", "gqa"):
        return Form("allgather", allgather_attention, "zigzag")
    if variant == "sliding_window":
        return Form("halo", lambda q, k, v, shard, scale=None:
                    halo_sliding_window_attention(q, k, v, shard, config.window, scale), "contiguous")
    if variant == "linear":  # scale-free: normalised by phi(q) z
        return Form("carried_state", lambda q, k, v, shard, scale=None:
                    carried_state_linear_attention(q, k, v, shard, config.chunk_size), "contiguous")
    if variant == "mla":  # its module gathers the latent (kv_lora_rank numbers a token) and up-projects it
        return Form("latent_allgather", None, "zigzag")
    if variant == "lsh":
        raise NotImplementedError("lsh: no distributed form (its buckets are sorted over the whole sequence)")
    raise NotImplementedError(f"{variant}: no distributed form yet")


def _context_parallel_core(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                           **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers attention core: the form and shard `install_context_parallel` put on the module."""
    if attention_mask is not None:
        raise NotImplementedError("context parallel: plain causal self-attention only (no padding or cache mask)")
    core, shard = module.context_parallel
    return core(query, key, value, shard, scaling).transpose(1, 2), None


AttentionInterface.register(CONTEXT_PARALLEL, _context_parallel_core)
AttentionMaskInterface.register(CONTEXT_PARALLEL, sdpa_mask)


def install_context_parallel(attention: nn.Module, config: Any, rank: int, world: int, group: Any = None) -> str:
    """Make attention module `attention` of a GPT-2 built with `config` compute its core in the variant's
    distributed form over `group`; from then on it takes this rank's tokens (`Shard` of the form's layout) and
    returns theirs (for GPT-2's own module, every module sharing `config`). Returns "name (layout)". Raises
    `NotImplementedError` with the reason for a variant without a form (lsh) or with attention dropout."""
    variant = config.attnlib_variant
    form = context_parallel_form(variant, config)
    if getattr(config, "attn_pdrop", 0.0):
        raise NotImplementedError(f"{variant}: attention dropout has no distributed form (attn_pdrop = 0 only)")
    attention.context_parallel = (form.core, Shard(rank, world, form.layout, group))
    if get_variant(variant).attention_function is not None:  # GPT-2's module: through the attention interface
        config._attn_implementation = CONTEXT_PARALLEL
    return f"{form.name} ({form.layout})"


RING_VARIANTS = ("sdpa",)  # cores that are one causal F.scaled_dot_product_attention call, which the ring replaces


@contextmanager
def ring_attention(buffers: list[torch.Tensor], group: Any = None, seq_dim: int = 1) -> Iterator[Any]:
    """PyTorch's ring attention (`torch.distributed.tensor.experimental.context_parallel`) over `group`'s ranks:
    shards the full-length `buffers` in place along `seq_dim` (its head-tail layout, rank r holding chunks r and
    2W-1-r of 2W, as `Shard(..., "zigzag")`), and while open, every causal `F.scaled_dot_product_attention` on
    local shards runs as ring attention, forward and backward (so both must run inside). Yields the device mesh.
    `NotImplementedError` off CUDA: the ring dispatches CUDA's flash, efficient and cuDNN SDPA kernels only."""
    if buffers[0].device.type != "cuda":
        raise NotImplementedError("ring attention: PyTorch's context_parallel replaces CUDA's SDPA kernels only")
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.tensor.experimental import context_parallel

    mesh = DeviceMesh.from_group(group if group is not None else dist.group.WORLD, "cuda")
    with context_parallel(mesh, buffers=buffers, buffer_seq_dims=[seq_dim] * len(buffers),
                          no_restore_buffers=set(buffers)):
        yield mesh


def ring_attention_error(attention: nn.Module, width: int, group: Any, device: torch.device,
                         tokens: int = 4096) -> float:
    """The largest difference between the ring form of attention layer `attention` (its outputs and its input's
    gradient, gathered from the ranks) and the layer on one card, over the largest reference value: the check a
    ring cell passes before it is timed."""
    from torch.distributed.tensor.experimental._attention import context_parallel_unshard  # not public yet

    x = torch.randn(1, tokens, width, device=device, dtype=torch.bfloat16)  # seeded alike on every rank
    grad = torch.randn_like(x)
    training = attention.training
    attention.eval()  # no dropout (GPT-2's resid_pdrop), which would draw other masks on the two paths
    with torch.autocast(device.type, dtype=torch.bfloat16):
        full = x.clone().requires_grad_()
        reference = attention(full)[0]
    reference.backward(grad)
    local, local_grad = x.clone(), grad.clone()
    with ring_attention([local, local_grad], group) as mesh:
        local.requires_grad_()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = attention(local)[0]
        out.backward(local_grad)
        gathered = context_parallel_unshard(mesh, [out.detach(), local.grad], [1, 1])
    attention.zero_grad(set_to_none=True)
    attention.train(training)
    return max(((g.float() - r.float()).abs().max() / r.float().abs().max()).item()
               for g, r in zip(gathered, (reference.detach(), full.grad)))

"""`lsh`: Reformer's LSH attention (Kitaev et al., 2020, arXiv:2001.04451), made strictly causal.

Reformer shares one projection for queries and keys (keys are the unit-normalised queries), hashes them with
`n_hashes` random rotations into `n_buckets` buckets (h(x) = argmax [xR; -xR]), sorts by bucket, cuts the sorted
sequence into chunks and lets each chunk attend to itself and the chunk before it. A token attends to itself only
when nothing else is allowed; the rounds are combined with weights from their log-sum-exps.

Why not Reformer's chunks as they are: a query's chunk boundaries depend on where *later* tokens fall in the global
sort, so what an early token sees would change with the future. Our fix keeps the sort and the two-chunk compute but
replaces the chunk boundary with a sliding window in sorted order: we sort by (bucket, position), so a token's
same-bucket predecessors sit directly before it, and query s sees the keys at sorted indices [s - chunk_size, s)
that share its bucket, i.e. its last `chunk_size` same-bucket predecessors. That set depends only on tokens at
earlier positions: strictly causal. All such keys lie in the query's chunk or the one before it, so the cost stays
Reformer's: O(T log T) to sort plus 2 chunk_size scores per query per round, n_hashes * T * 2 * chunk_size in all.

Memory: the sorted copies, scores and masks are O(T x n_hashes x chunk_size) per layer; with `recompute=True` the
backward pass recomputes them from the core's inputs (as FlashAttention recomputes its scores), so a layer keeps
only O(T x D) for backward and long sequences fit.

Choices: the rotations are drawn once per layer at construction (a buffer saved with the model) rather than each
step, so the hash is a fixed, reproducible function; duplicates across rounds are not de-duplicated (Reformer's
default). With `n_buckets = 1` and `chunk_size >= T` this is exactly full causal shared-QK attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import GPT2Config
from transformers.pytorch_utils import Conv1D

from ..archs import dims_of
from ..registry import VariantSpec, register
from ._common import gpt2_init_, gpt2_output_projection, layer_cache, require_plain_causal, require_positive

SELF_SCORE = -5e4  # Reformer's value for q_i . k_i: finite, so a token with nothing else to see sees itself


def lsh_attention(qk: torch.Tensor, v: torch.Tensor, rotations: torch.Tensor, chunk_size: int,
                  scaling: float) -> torch.Tensor:
    """Causal LSH attention with shared QK.

    Args:
        qk: shared queries/keys `[B, H, T, D]`; keys are `qk / |qk|`.
        v: values `[B, H, T, D]`.
        rotations: `[D, n_hashes, n_buckets // 2]` random rotations, or `[D, n_hashes, 0]` for one bucket.
        chunk_size: the sliding window in sorted order, and the chunk of the two-chunk compute (T % chunk_size == 0).
        scaling: multiplies q . k.

    Returns: `[B, H, T, D]`.
    """
    B, H, T, D = qk.shape
    n_hashes = rotations.shape[1]
    n_chunks = T // chunk_size
    keys = F.normalize(qk, dim=-1)
    if rotations.shape[-1] == 0:
        buckets = qk.new_zeros(B, H, n_hashes, T, dtype=torch.long)
    else:
        # hash in fp32 so bf16 rounding of the rotation moves as few tokens across bucket borders as possible
        rotated = torch.einsum("bhtd,dnr->bhntr", keys.float(), rotations.float())
        buckets = torch.cat([rotated, -rotated], dim=-1).argmax(dim=-1)  # [B, H, n, T]
    position = torch.arange(T, device=qk.device)
    order = (buckets * T + position).argsort(dim=-1)  # sort by (bucket, position); [B, H, n, T]

    def sorted_chunks(x: torch.Tensor) -> torch.Tensor:  # [B, H, T, E] -> [B, H, n, n_chunks, chunk_size, E]
        x = x.unsqueeze(2).expand(B, H, n_hashes, T, x.shape[-1])
        x = x.gather(3, order.unsqueeze(-1).expand(-1, -1, -1, -1, x.shape[-1]))
        return x.reshape(B, H, n_hashes, n_chunks, chunk_size, -1)

    def with_previous_chunk(x: torch.Tensor) -> torch.Tensor:  # keys: own chunk and the one before (wraps at 0)
        return x if n_chunks == 1 else torch.cat([x.roll(1, dims=3), x], dim=4)

    q_s, k_s, v_s = sorted_chunks(qk), sorted_chunks(keys), sorted_chunks(v)
    bucket_s = buckets.gather(3, order).view(B, H, n_hashes, n_chunks, chunk_size)
    sorted_idx = torch.arange(T, device=qk.device).view(n_chunks, chunk_size)
    k_bucket, k_idx = with_previous_chunk(bucket_s), with_previous_chunk(sorted_idx.expand(B, H, n_hashes, -1, -1))
    q_idx = sorted_idx.view(1, 1, 1, n_chunks, chunk_size, 1)

    score_dtype = torch.promote_types(qk.dtype, torch.float32)  # softmax statistics in >= fp32
    scores = (q_s @ with_previous_chunk(k_s).transpose(-1, -2)).to(score_dtype) * scaling  # [B, H, n, nc, c, 2c]
    k_idx = k_idx.unsqueeze(-2)
    visible = (k_idx < q_idx) & (k_idx >= q_idx - chunk_size) & (k_bucket.unsqueeze(-2) == bucket_s.unsqueeze(-1))
    scores = scores.masked_fill(~visible, float("-inf")).masked_fill(k_idx == q_idx, SELF_SCORE)
    lse = scores.logsumexp(dim=-1, keepdim=True)  # [B, H, n, nc, c, 1]
    out = (scores - lse).exp().to(v.dtype) @ with_previous_chunk(v_s)  # [B, H, n, nc, c, D]

    # undo the sort, then weight each round by its share of the total probability mass
    undo = order.argsort(dim=-1)
    out = out.reshape(B, H, n_hashes, T, D).gather(3, undo.unsqueeze(-1).expand(-1, -1, -1, -1, D))
    lse = lse.reshape(B, H, n_hashes, T, 1).gather(3, undo.unsqueeze(-1))
    weights = torch.softmax(lse, dim=2).to(out.dtype)
    return (out * weights).sum(dim=2)


class LSHAttention(nn.Module):
    """GPT-2 attention block with a shared QK projection and the causal LSH core."""

    def __init__(self, config: GPT2Config, layer_idx: int | None = None):
        super().__init__()
        self.config, self.layer_idx = config, layer_idx
        self.n_head, self.head_dim = config.n_head, config.n_embd // config.n_head
        self.chunk_size = config.chunk_size
        self.c_attn = Conv1D(2 * config.n_embd, config.n_embd)  # shared qk, v
        gpt2_init_(self.c_attn, config)
        self.c_proj, self.resid_dropout = gpt2_output_projection(config)
        generator = torch.Generator().manual_seed(config.lsh_seed + (layer_idx or 0))
        # drawn on the host from a seeded host generator (the same rotations on every device), then put where the
        # other weights are being built
        rotations = torch.randn(self.head_dim, config.n_hashes, config.n_buckets // 2, generator=generator,
                                device="cpu")
        self.register_buffer("rotations", rotations.to(self.c_attn.weight.device))

    def forward(self, hidden_states: torch.Tensor, past_key_values=None, attention_mask=None, **kwargs):
        require_plain_causal(attention_mask, "lsh")
        if layer_cache(kwargs, past_key_values) is not None:
            raise NotImplementedError("lsh: no KV cache; build with use_cache=False")
        B, T, _ = hidden_states.shape
        y = self.core(*self.project(hidden_states)).transpose(1, 2).reshape(B, T, -1)
        return self.resid_dropout(self.c_proj(y)), None

    def project(self, hidden_states: torch.Tensor, rope: None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The shared query/key and the values, `[B, H, T, D]` each (GPT-2 has no rotary positions: `rope` is
        None)."""
        B, T, _ = hidden_states.shape
        return tuple(t.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
                     for t in self.c_attn(hidden_states).split(self.config.n_embd, dim=2))

    def core(self, qk: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """LSH attention of `[B, H, T, D]` inputs, `[B, H, T, D]` out."""
        # any T: pad to whole chunks at the end; padded tokens come after every real one in each bucket, and a
        # query only sees keys before it in sorted order, so they never reach a real output
        T = qk.shape[2]
        qk, v = (F.pad(t, (0, 0, 0, -T % self.chunk_size)) for t in (qk, v))
        if self.config.recompute and torch.is_grad_enabled():
            # keep only the core's inputs for the backward pass and recompute the rest there (FlashAttention's
            # trade): what a layer holds for backward is then O(T x D), not O(T x n_hashes x chunk_size)
            return checkpoint(lsh_attention, qk, v, self.rotations, self.chunk_size, self.head_dim**-0.5,
                              use_reentrant=False)[:, :, :T]
        return lsh_attention(qk, v, self.rotations, self.chunk_size, self.head_dim**-0.5)[:, :, :T]


def attention_flops(config: GPT2Config, seq_len: int) -> float:
    """Forward FLOPs of one layer on one sequence, all heads, an upper bound: per round and token, hashing
    (2 D x n_buckets/2) and scores + values over at most chunk_size visible keys (4 D each)."""
    return config.n_hashes * seq_len * dims_of(config).attention_width * (4.0 * config.chunk_size + config.n_buckets)


def validate(config: GPT2Config, seq_len: int) -> None:
    for name in ("n_hashes", "n_buckets", "chunk_size"):
        require_positive(config, name)
    if config.n_buckets != 1 and config.n_buckets % 2:
        raise ValueError(f"n_buckets: must be 1 or even (random rotations give 2 buckets each), got {config.n_buckets}")


register(
    VariantSpec(
        name="lsh",
        description="Reformer LSH attention, shared QK, strictly causal sliding window in bucket-sorted order",
        exact=False,
        decode_cache=None,
        kernel=lambda device: "attnlib lsh_attention (PyTorch sort + chunked matmul)",
        # recompute: the core recomputed in the backward pass (long sequences); off for the paper's T = 512 table
        params={"n_hashes": 2, "n_buckets": 8, "chunk_size": 64, "lsh_seed": 0, "recompute": False},
        unsupported={"llama": "Reformer's LSH hashes one shared query-key vector per token; RoPE rotates it by the "
                              "token's position, so its buckets follow absolute positions instead of grouping the "
                              "keys a query would attend to"},
        attention_module=LSHAttention,
        attention_flops=attention_flops,
        validate=validate,
    )
)

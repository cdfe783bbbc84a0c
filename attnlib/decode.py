"""Decoding with each variant's own cache: prefill a prompt through the variant's own core, then one token per
step from what the variant keeps.

`Decoder` runs GPT-2's blocks itself, as `attnlib.model.causal_hidden_states` does for training (ln_1, attention
with the layer's cache, residual, ln_2, MLP, residual; then ln_f and the head), so every cache is attnlib's own.
What each variant keeps per layer and sequence:

| cache | variants | per token of context |
|---|---|---|
| `KVCache` | baseline, sdpa, flash, cudnn, flex, gqa | keys and values of the `n_kv` key/value heads: 2 n_kv D |
| `LatentCache` | mla | the normalised latent, `kv_lora_rank` numbers (DeepSeek-V2's point) |
| `RingCache` | sliding_window | nothing more: the last `window` keys and values, constant memory |
| `LinearState` | linear | nothing more: phi(k)^T v [D, D] and sum phi(k) [D] per head, fp32 |

A decode step has static shapes, so that it can be replayed as one CUDA graph: its position is a device tensor,
the caches are updated in place at it, and attention runs over the whole buffer through a mask of the filled
slots. `Decoder` runs the step in one of `DECODE_MODES`: "eager"; "cudagraph", the eager step captured once as
a CUDA graph and replayed (no compiler: a capture takes milliseconds); "compile", `torch.compile` (fused kernels
launched from Python); "graph", `torch.compile(mode="reduce-overhead")` (fused, and replayed as CUDA graphs). For an exact variant that is one SDPA call of its single query (every exact core computes the same
function there). MLA decodes in absorbed form: the query is taken into the latent space through W_uk and
the weighted sum of latents out of it through W_uv, so K and V are never materialised (their biases drop out: a
key bias adds the same score to every key, and the value bias passes through weights that sum to one).
lsh has no cache: its buckets are sorted over the whole sequence, so a token's attended set depends on tokens
that come after it in the same chunks, and no step-by-step form reproduces its training-time attention.

    decoder = Decoder(model, batch_size=1, max_len=768)
    logits = decoder.prefill(prompt)[:, -1]         # [B, V]
    for _ in range(256):
        logits = decoder.step(logits.argmax(-1, keepdim=True))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GPT2LMHeadModel

from .registry import get_variant
from .variants.gqa import GroupedQueryAttention
from .variants.linear import feature_map
from .variants.mla import MultiHeadLatentAttention

KV_VARIANTS = ("baseline", "sdpa", "flash", "cudnn", "flex", "gqa")
DECODE_MODES = ("eager", "cudagraph", "compile", "graph")


def _heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    """[B, T, n D] -> [B, n, T, D]"""
    B, T, _ = x.shape
    return x.view(B, T, -1, head_dim).transpose(1, 2)


def _qkv(attn: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Queries [B, H, T, D] and keys, values [B, n_kv, T, D] from GPT-2's `c_attn` or GQA's."""
    if isinstance(attn, GroupedQueryAttention):
        qkv = _heads(attn.c_attn(x), attn.head_dim)
        return qkv.split([attn.n_head, attn.n_kv_head, attn.n_kv_head], dim=1)
    q, k, v = attn.c_attn(x).split(attn.split_size, dim=2)
    return _heads(q, attn.head_dim), _heads(k, attn.head_dim), _heads(v, attn.head_dim)


def _output(attn: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """[B, H, T, D] attention output -> the layer's output projection [B, T, C]."""
    return attn.c_proj(y.transpose(1, 2).flatten(2))


def _core(attn: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention of a prompt by the variant's own training-time core, [B, H, T, D]."""
    if isinstance(attn, GroupedQueryAttention):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    core = get_variant(attn.config.attnlib_variant).attention_function
    return core(attn, q, k, v, None, scaling=attn.scaling)[0].transpose(1, 2)


class _Cache:
    """What every cache has: `BUFFERS`, its tensors (their bytes are `nbytes`), and `OVERWRITTEN`, those a step
    changes for positions before its own, which `Decoder.rewind` restores (a growing cache has none: the steps after
    a rewind rewrite their own slots)."""

    BUFFERS: tuple[str, ...] = ()
    OVERWRITTEN: tuple[str, ...] = ()

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, name).nbytes for name in self.BUFFERS)

    def overwritten(self) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(self, name) for name in self.OVERWRITTEN)


class _ProjectedCache(_Cache):
    """A cache fed by the layer's own q, k, v projections: a prompt runs the variant's training-time core, and
    `_store` keeps what later steps need of its keys and values."""

    def _store(self, k: torch.Tensor, v: torch.Tensor) -> None:
        raise NotImplementedError

    def prefill(self, attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
        q, k, v = _qkv(attn, x)
        self._store(k, v)
        return _output(attn, _core(attn, q, k, v))


class KVCache(_ProjectedCache):
    """Keys and values of every position so far, in static buffers of `max_len` positions."""

    BUFFERS = ("keys", "values")

    def __init__(self, attn: nn.Module, batch: int, max_len: int, dtype: torch.dtype, device: torch.device):
        n_kv = attn.n_kv_head if isinstance(attn, GroupedQueryAttention) else attn.num_heads
        self.keys = _static(torch.zeros(batch, n_kv, max_len, attn.head_dim, dtype=dtype, device=device))
        self.values = _static(torch.zeros_like(self.keys))

    def _store(self, k: torch.Tensor, v: torch.Tensor) -> None:
        self.keys[:, :, :k.shape[2]], self.values[:, :, :k.shape[2]] = k, v

    def step(self, attn: nn.Module, x: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        q, k, v = _qkv(attn, x)
        self.keys.index_copy_(2, position, k)
        self.values.index_copy_(2, position, v)
        seen = _upto(position, self.keys.shape[2])
        y = F.scaled_dot_product_attention(q, self.keys, self.values, attn_mask=seen, scale=_scale(attn),
                                           enable_gqa=self.keys.shape[1] != q.shape[1])
        return _output(attn, y)


class LatentCache(_Cache):
    """MLA's normalised latent of every position so far; decode in absorbed form (see the module docstring)."""

    BUFFERS = ("latents",)

    def __init__(self, attn: MultiHeadLatentAttention, batch: int, max_len: int, dtype: torch.dtype,
                 device: torch.device):
        self.latents = _static(torch.zeros(batch, max_len, attn.kv_down.nf, dtype=dtype, device=device))

    def prefill(self, attn: MultiHeadLatentAttention, x: torch.Tensor) -> torch.Tensor:
        latent = attn.kv_norm(attn.kv_down(x))
        self.latents[:, :latent.shape[1]] = latent
        q, k, v = (_heads(t, attn.head_dim) for t in (attn.q_proj(x), attn.k_up(latent), attn.v_up(latent)))
        return _output(attn, F.scaled_dot_product_attention(q, k, v, is_causal=True))

    def step(self, attn: MultiHeadLatentAttention, x: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        self.latents.index_copy_(1, position, attn.kv_norm(attn.kv_down(x)))
        latents = self.latents  # [B, L, r]
        H, D = attn.n_head, attn.head_dim
        w_uk, w_uv = (w.view(-1, H, D) for w in (attn.k_up.weight, attn.v_up.weight))  # [r, H, D]
        # The heads are the rows of one query matrix against the shared latents (MQA with head size r): two plain
        # batched matmuls over [B, L, r]. A per-head broadcast would copy the whole cache H times every step.
        q_latent = torch.einsum("bhd,rhd->bhr", _heads(attn.q_proj(x), D).squeeze(2), w_uk)  # q W_uk^T
        scores = (q_latent @ latents.transpose(1, 2)) * D ** -0.5  # [B, H, L]
        scores = scores.float().masked_fill(~_upto(position, latents.shape[1]), float("-inf"))
        weighted = scores.softmax(-1).to(latents.dtype) @ latents  # [B, H, r]
        y = torch.einsum("bhr,rhd->bhd", weighted, w_uv) + attn.v_up.bias.view(H, D)
        return _output(attn, y.unsqueeze(2))


class RingCache(_ProjectedCache):
    """sliding_window's last `window` keys and values: position t lives in slot t mod window. Slot order does not
    matter: GPT-2's positions enter at the input, so attention over a set of keys is the same in any order."""

    BUFFERS = OVERWRITTEN = ("keys", "values")  # a step evicts the oldest slot

    def __init__(self, attn: nn.Module, batch: int, max_len: int, dtype: torch.dtype, device: torch.device):
        self.window = attn.config.window
        self.keys = _static(torch.zeros(batch, attn.num_heads, self.window, attn.head_dim, dtype=dtype, device=device))
        self.values = _static(torch.zeros_like(self.keys))

    def _store(self, k: torch.Tensor, v: torch.Tensor) -> None:
        T = k.shape[2]
        slots = torch.arange(max(0, T - self.window), T, device=k.device)  # only the last `window` are needed
        self.keys.index_copy_(2, slots % self.window, k[:, :, slots])
        self.values.index_copy_(2, slots % self.window, v[:, :, slots])

    def step(self, attn: nn.Module, x: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        q, k, v = _qkv(attn, x)
        self.keys.index_copy_(2, position % self.window, k)
        self.values.index_copy_(2, position % self.window, v)
        filled = _upto(position, self.window)  # slots 0..position until the ring is full, then all
        y = F.scaled_dot_product_attention(q, self.keys, self.values, attn_mask=filled, scale=_scale(attn))
        return _output(attn, y)


class LinearState(_ProjectedCache):
    """linear's recurrent state: S = sum phi(k)^T v and z = sum phi(k) over the context, in fp32 (the training
    form accumulates in fp32 too); a step adds its token, then reads phi(q) S / phi(q) z."""

    BUFFERS = OVERWRITTEN = ("state", "normaliser")  # a step adds its token to the sums

    def __init__(self, attn: nn.Module, batch: int, max_len: int, dtype: torch.dtype, device: torch.device):
        H, D = attn.num_heads, attn.head_dim
        self.state = _static(torch.zeros(batch, H, D, D, dtype=torch.float32, device=device))
        self.normaliser = _static(torch.zeros(batch, H, D, dtype=torch.float32, device=device))

    def _store(self, k: torch.Tensor, v: torch.Tensor) -> None:
        phi_k = feature_map(k).float()
        self.state += phi_k.transpose(2, 3) @ v.float()
        self.normaliser += phi_k.sum(2)

    def step(self, attn: nn.Module, x: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        q, k, v = _qkv(attn, x)
        self._store(k, v)
        phi_q = feature_map(q).float()  # [B, H, 1, D]
        y = (phi_q @ self.state) / (phi_q * self.normaliser.unsqueeze(2)).sum(-1, keepdim=True)
        return _output(attn, y.to(v.dtype))


def _scale(attn: nn.Module) -> float:
    return attn.scaling if hasattr(attn, "scaling") else attn.head_dim ** -0.5


def _upto(position: torch.Tensor, slots: int) -> torch.Tensor:
    """[1, slots] mask (one query) of the slots a step at `position` ([1]) attends to: 0..position."""
    return (torch.arange(slots, device=position.device) <= position).unsqueeze(0)


def _static(buffer: torch.Tensor) -> torch.Tensor:
    """A cache buffer updated in place at a fixed address, so that a compiled step (CUDA graphs) may mutate it."""
    torch._dynamo.mark_static_address(buffer)
    return buffer


def cache_kind(variant: str) -> type:
    """The cache class of `variant`; `NotImplementedError` (recorded as unsupported) for one without."""
    get_variant(variant)
    if variant in KV_VARIANTS:
        return KVCache
    kinds = {"mla": LatentCache, "sliding_window": RingCache, "linear": LinearState}
    if variant not in kinds:
        raise NotImplementedError(f"{variant}: no decode cache (its attended set depends on later tokens)")
    return kinds[variant]


class Decoder:
    """Greedy decoding of a `build_model` GPT-2 (in eval mode) with its variant's cache, `batch_size` sequences
    of at most `max_len` positions. Caches take the dtype of the model's weights (cast the model for bf16).

    A step has static shapes (its position is a device tensor, the caches are updated in place and attended
    through a mask of the filled slots), so it runs in any of `DECODE_MODES` (see the module docstring)."""

    def __init__(self, model: GPT2LMHeadModel, batch_size: int, max_len: int, mode: str = "eager"):
        if model.training:
            raise ValueError("model: call model.eval() first (dropout would make decoding differ from the forward)")
        if max_len > model.config.n_positions:
            raise ValueError(f"max_len: {max_len} is more than the model's n_positions ({model.config.n_positions})")
        weight = model.transformer.wte.weight
        if mode not in DECODE_MODES:
            raise ValueError(f"mode: one of {', '.join(DECODE_MODES)}, got {mode!r}")
        if mode == "cudagraph" and weight.device.type != "cuda":
            raise ValueError("mode 'cudagraph': CUDA graphs need the model on a CUDA device")
        self.model, self.batch_size, self.max_len, self.length = model, batch_size, max_len, 0
        kind = cache_kind(model.config.attnlib_variant)
        self.caches = [kind(block.attn, batch_size, max_len, weight.dtype, weight.device)
                       for block in model.transformer.h]
        self.position = _static(torch.zeros(1, dtype=torch.long, device=weight.device))
        self._step = {"eager": lambda: self._step_logits, "cudagraph": lambda: self._replay,
                      "compile": lambda: torch.compile(self._step_logits),
                      "graph": lambda: torch.compile(self._step_logits, mode="reduce-overhead")}[mode]()
        self._graph: torch.cuda.CUDAGraph | None = None

    @property
    def cache_bytes(self) -> int:
        """Bytes the caches hold (allocated for `max_len` positions, or the constant state)."""
        return sum(cache.nbytes for cache in self.caches)

    def _check(self, ids: torch.Tensor, new: int) -> None:
        if ids.shape[0] != self.batch_size:
            raise ValueError(f"ids: batch of {ids.shape[0]}, the decoder was built for {self.batch_size}")
        if self.length + new > self.max_len:
            raise ValueError(f"max_len: the caches hold {self.max_len} positions, {self.length + new} needed")

    def _blocks(self, hidden: torch.Tensor, attend) -> torch.Tensor:
        """GPT-2's blocks, `attend(cache, attn, x)` in place of self-attention (ln_f and the head: `_head`)."""
        for block, cache in zip(self.model.transformer.h, self.caches):
            hidden = hidden + attend(cache, block.attn, block.ln_1(hidden))
            hidden = hidden + block.mlp(block.ln_2(hidden))
        return hidden

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(self.model.transformer.ln_f(hidden))

    def _step_logits(self, ids: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        t = self.model.transformer
        hidden = t.wte(ids) + t.wpe(position)
        return self._head(self._blocks(hidden, lambda cache, attn, x: cache.step(attn, x, position))[:, 0])

    def _replay(self, ids: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """The step as one CUDA graph, captured at the first call and replayed after. Capture records kernels
        without running them; the two warm-up steps before it (on a side stream, as capture requires) do run, and
        a rewind undoes what they added to the caches."""
        if self._graph is None:
            self._ids = ids.clone()
            before = self.mark()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    self._step_logits(self._ids, position)
            torch.cuda.current_stream().wait_stream(side)
            self.rewind(before)
            self._graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._graph):
                self._logits = self._step_logits(self._ids, position)
        self._ids.copy_(ids)
        self._graph.replay()
        return self._logits

    @torch.no_grad()
    def prefill(self, ids: torch.Tensor, all_logits: bool = True) -> torch.Tensor:
        """Logits [B, T, V] of a prompt [B, T], which fills the caches; with `all_logits=False` only the last
        position's, [B, 1, V] (all that generation needs: the head costs 2 x its weights per position)."""
        if self.length:
            raise ValueError("prefill: the caches are not empty; build a new Decoder")
        self._check(ids, ids.shape[1])
        t = self.model.transformer
        hidden = t.wte(ids) + t.wpe(torch.arange(ids.shape[1], device=ids.device))
        hidden = self._blocks(hidden, lambda cache, attn, x: cache.prefill(attn, x))
        self.length = ids.shape[1]
        return self._head(hidden if all_logits else hidden[:, -1:])

    @torch.no_grad()
    def step(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits [B, V] of the next token after one new token per sequence, `ids` [B, 1]. In "cudagraph" mode
        the next step overwrites them (one static output): clone them to keep them."""
        if ids.shape[1] != 1:
            raise ValueError(f"step: one token per sequence, got {ids.shape[1]}")
        self._check(ids, 1)
        self.position.fill_(self.length)
        logits = self._step(ids, self.position)
        self.length += 1
        return logits

    def mark(self) -> tuple[int, list[tuple[torch.Tensor, ...]]]:
        """The decoder's state now, for `rewind`: its length and copies of what later steps overwrite (a ring's
        slots, linear's sums: small; a growing cache needs no copy)."""
        return self.length, [tuple(t.clone() for t in cache.overwritten()) for cache in self.caches]

    @torch.no_grad()
    def rewind(self, mark: tuple[int, list[tuple[torch.Tensor, ...]]]) -> None:
        """Back to a `mark`, in place (the buffers keep their addresses, so a recorded CUDA graph stays valid):
        repeated decodes from one prefill, as a measurement of decode alone needs."""
        self.length, saved = mark[0], mark[1]
        for cache, copies in zip(self.caches, saved):
            for buffer, copy in zip(cache.overwritten(), copies):
                buffer.copy_(copy)

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
        """Greedy continuation: the `new_tokens` ids [B, new_tokens] after `prompt` [B, T]."""
        logits, out = self.prefill(prompt, all_logits=False)[:, -1], []
        for _ in range(new_tokens):
            out.append(logits.argmax(-1, keepdim=True))
            logits = self.step(out[-1])
        return torch.cat(out, dim=1)


def cache_bytes_per_token(model: GPT2LMHeadModel, dtype: torch.dtype) -> int:
    """Analytic bytes a sequence's cache grows by per token of context, all layers: 0 for a constant-size cache
    (sliding_window's ring once full, linear's state)."""
    config, kind = model.config, cache_kind(model.config.attnlib_variant)
    size, head_dim = torch.tensor([], dtype=dtype).element_size(), config.n_embd // config.n_head
    if kind is KVCache:
        n_kv = config.n_kv_head if config.attnlib_variant == "gqa" else config.n_head
        return config.n_layer * 2 * n_kv * head_dim * size
    if kind is LatentCache:
        return config.n_layer * config.kv_lora_rank * size
    return 0


def step_bytes_read(model: GPT2LMHeadModel, batch_size: int, context_len: int, dtype: torch.dtype) -> int:
    """The least a decode step must read from memory at `context_len` tokens of context: every weight once (the
    head reads the tied embedding whole; the position table only the rows it uses, not counted) and the cache of
    each sequence as far as the step attends: all of it for a growing cache, the ring's filled slots, or linear's
    state. Over the card's read bandwidth (`calibrate_bandwidth`) this is the step's memory floor (the static step
    reads the whole `max_len` buffer: part of what the floor multiple shows)."""
    size = torch.tensor([], dtype=dtype).element_size()
    wpe = model.transformer.wpe.weight
    weights = sum(p.numel() for p in model.parameters() if p is not wpe) * size
    config, kind = model.config, cache_kind(model.config.attnlib_variant)
    head_dim = config.n_embd // config.n_head
    if kind is RingCache:
        per_sequence = config.n_layer * 2 * config.n_head * head_dim * min(context_len, config.window) * size
    elif kind is LinearState:
        per_sequence = config.n_layer * config.n_head * (head_dim * head_dim + head_dim) * 4
    else:
        per_sequence = cache_bytes_per_token(model, dtype) * context_len
    return weights + batch_size * per_sequence

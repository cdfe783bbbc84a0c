"""Decoding with each variant's own cache: prefill a prompt through the variant's own core, then one token per
step from what the variant keeps, in any model family.

`Decoder` runs the family's layers itself (`attnlib.archs`: the family's `Decoding` gives its norms, attention,
MLP, embeddings, positions and head, and each attention's projections), as the family's `causal_hidden_states`
does for training, so every cache is attnlib's own. What each variant keeps per layer and sequence
(`VariantSpec.decode_cache`):

| cache | variants | per token of context |
|---|---|---|
| `KVCache` | the exact kernels, gqa, mha, mqa | keys and values of the `n_kv` key/value heads: 2 n_kv D |
| `LatentCache` | mla on GPT-2 | the normalised latent, `kv_lora_rank` numbers (DeepSeek-V2's point) |
| `RopeLatentCache` | mla on a RoPE family | the latent and the one shared RoPE key: kv_lora_rank + qk_rope_head_dim |
| `RingCache` | sliding_window | nothing more: the last `window` keys and values, constant memory |
| `LinearState` | linear | nothing more: phi(k)^T v [D, D] and sum phi(k) [D] per key/value head, fp32 |

A decode step has static shapes, so that it can be replayed as one CUDA graph: its position is a device tensor,
the caches are updated in place at it, and attention runs over the whole buffer through a mask of the filled
slots. `Decoder` runs the step in one of `DECODE_MODES`: "eager"; "cudagraph", the eager step captured once as
a CUDA graph and replayed (no compiler: a capture takes milliseconds); "compile", `torch.compile` (fused kernels
launched from Python); "graph", `torch.compile(mode="reduce-overhead")` (fused, and replayed as CUDA graphs). For an
exact variant that is one SDPA call of its single query (every exact core computes the same function there). MLA
decodes in absorbed form: the query is taken into the latent space through W_uk and the weighted sum of latents
out of it through W_uv, so K and V are never materialised (their biases drop out: a key bias adds the same score to
every key, and the value bias passes through weights that sum to one); on a RoPE family the query's rotated part
meets the cached, rotated shared key directly. lsh has no cache: its buckets are sorted over the whole sequence, so
a token's attended set depends on tokens that come after it in the same chunks, and no step-by-step form reproduces
its training-time attention.

    decoder = Decoder(model, batch_size=1, max_len=768)
    logits = decoder.prefill(prompt)[:, -1]         # [B, V]
    for _ in range(256):
        logits = decoder.step(logits.argmax(-1, keepdim=True))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .archs import arch_of, dims_of
from .registry import get_variant
from .variants.linear import feature_map
from .variants.mla import MultiHeadLatentAttention, RopeLatentAttention

DECODE_MODES = ("eager", "cudagraph", "compile", "graph")


def _heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    """[B, T, n D] -> [B, n, T, D]"""
    B, T, _ = x.shape
    return x.view(B, T, -1, head_dim).transpose(1, 2)


def _core(attn: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention of a prompt by the variant's own training-time core, [B, H, T, D] (a variant with its own
    module and a key/value cache, gqa, attends through SDPA as its forward does)."""
    core = get_variant(attn.config.attnlib_variant).attention_function
    if core is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=k.shape[1] != q.shape[1])
    return core(attn, q, k, v, None, scaling=_scale(attn))[0].transpose(1, 2)


class _Cache:
    """What every cache has: `BUFFERS`, its tensors (their bytes are `nbytes`), and `OVERWRITTEN`, those a step
    changes for positions before its own, which `Decoder.rewind` restores (a growing cache has none: the steps after
    a rewind rewrite their own slots). `family` is the model family's `Decoding` (projections, positions)."""

    BUFFERS: tuple[str, ...] = ()
    OVERWRITTEN: tuple[str, ...] = ()

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, name).nbytes for name in self.BUFFERS)

    def overwritten(self) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(self, name) for name in self.OVERWRITTEN)


class _ProjectedCache(_Cache):
    """A cache fed by the layer's own q, k, v projections (keys rotated to their positions where the family uses
    RoPE): a prompt runs the variant's training-time core, and `_store` keeps what later steps need."""

    def __init__(self, family, attn: nn.Module):
        self.family, self.n_kv, self.head_dim = family, family.kv_heads(attn), attn.head_dim

    def _store(self, k: torch.Tensor, v: torch.Tensor) -> None:
        raise NotImplementedError

    def prefill(self, attn: nn.Module, x: torch.Tensor, rope) -> torch.Tensor:
        q, k, v = self.family.qkv(attn, x, rope)
        self._store(k, v)
        return self.family.output(attn, _core(attn, q, k, v))


class KVCache(_ProjectedCache):
    """Keys and values of every position so far (the variant's key/value heads), in static buffers of `max_len`."""

    BUFFERS = ("keys", "values")

    def __init__(self, family, attn: nn.Module, batch: int, max_len: int, dtype: torch.dtype, device: torch.device):
        super().__init__(family, attn)
        self.keys = _static(torch.zeros(batch, self.n_kv, max_len, self.head_dim, dtype=dtype, device=device))
        self.values = _static(torch.zeros_like(self.keys))

    def _store(self, k: torch.Tensor, v: torch.Tensor) -> None:
        self.keys[:, :, :k.shape[2]], self.values[:, :, :k.shape[2]] = k, v

    def step(self, attn: nn.Module, x: torch.Tensor, position: torch.Tensor, rope) -> torch.Tensor:
        q, k, v = self.family.qkv(attn, x, rope)
        self.keys.index_copy_(2, position, k)
        self.values.index_copy_(2, position, v)
        seen = _upto(position, self.keys.shape[2])
        y = F.scaled_dot_product_attention(q, self.keys, self.values, attn_mask=seen, scale=_scale(attn),
                                           enable_gqa=self.keys.shape[1] != q.shape[1])
        return self.family.output(attn, y)


class LatentCache(_Cache):
    """MLA's normalised latent of every position so far (GPT-2's form); decode in absorbed form (module docstring)."""

    BUFFERS = ("latents",)

    def __init__(self, family, attn: MultiHeadLatentAttention, batch: int, max_len: int, dtype: torch.dtype,
                 device: torch.device):
        self.family = family
        self.latents = _static(torch.zeros(batch, max_len, attn.kv_down.nf, dtype=dtype, device=device))

    def prefill(self, attn: MultiHeadLatentAttention, x: torch.Tensor, rope) -> torch.Tensor:
        latent = attn.latent(x)
        self.latents[:, :latent.shape[1]] = latent
        return self.family.output(attn, attn.core(*attn.project(x, latent=latent)))

    def step(self, attn: MultiHeadLatentAttention, x: torch.Tensor, position: torch.Tensor, rope) -> torch.Tensor:
        self.latents.index_copy_(1, position, attn.latent(x))
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
        return self.family.output(attn, y.unsqueeze(2))


class RopeLatentCache(_Cache):
    """DeepSeek-V2's MLA cache in a RoPE model: per position the normalised latent (`kv_lora_rank` numbers) and the
    one RoPE key shared by all heads, already rotated (`qk_rope_head_dim` numbers). A step absorbs W_uk into the
    query's position-free part and W_uv into the output, so keys and values are never materialised; the query's
    RoPE part meets the cached RoPE keys directly."""

    BUFFERS = ("latents", "rope_keys")

    def __init__(self, family, attn: RopeLatentAttention, batch: int, max_len: int, dtype: torch.dtype,
                 device: torch.device):
        self.family = family
        self.latents = _static(torch.zeros(batch, max_len, attn.kv_lora_rank, dtype=dtype, device=device))
        self.rope_keys = _static(torch.zeros(batch, max_len, attn.rope_dim, dtype=dtype, device=device))

    def prefill(self, attn: RopeLatentAttention, x: torch.Tensor, rope) -> torch.Tensor:
        T = x.shape[1]
        latent = attn.latent(x, torch.arange(T, device=x.device))  # positions 0..T-1
        self.latents[:, :T], self.rope_keys[:, :T] = latent
        return self.family.output(attn, attn.core(*attn.project(x, latent=latent)))

    def step(self, attn: RopeLatentAttention, x: torch.Tensor, position: torch.Tensor, rope) -> torch.Tensor:
        latent, k_rope = attn.latent(x, position)
        self.latents.index_copy_(1, position, latent)
        self.rope_keys.index_copy_(1, position, k_rope)
        B, H, D, R = x.shape[0], attn.n_head, attn.head_dim, attn.rope_dim
        q = attn.q_up(attn.q_norm(attn.q_down(x))).view(B, H, D + R)
        q_nope, q_rope = q.split([D, R], dim=-1)
        q_rope = attn.rotate(q_rope.view(B * H, 1, R), position).view(B, H, R)
        w = attn.kv_up.weight.view(H, 2 * D, attn.kv_lora_rank)  # per head: D rows of W_uk, then D of W_uv
        q_latent = torch.einsum("bhd,hdr->bhr", q_nope, w[:, :D])  # [B, H, r]
        scores = (q_latent @ self.latents.transpose(1, 2) + q_rope @ self.rope_keys.transpose(1, 2)) * attn.scaling
        scores = scores.float().masked_fill(~_upto(position, self.latents.shape[1]), float("-inf"))
        weighted = scores.softmax(-1).to(self.latents.dtype) @ self.latents  # [B, H, r]
        y = torch.einsum("bhr,hdr->bhd", weighted, w[:, D:])  # [B, H, D]
        return attn.o_proj(y.reshape(B, 1, H * D))


class RingCache(_ProjectedCache):
    """sliding_window's last `window` keys and values: position t lives in slot t mod window. Slot order does not
    matter: attention over a set of keys is the same in any order (GPT-2's positions enter at the input, RoPE's are
    in the cached keys already)."""

    BUFFERS = OVERWRITTEN = ("keys", "values")  # a step evicts the oldest slot

    def __init__(self, family, attn: nn.Module, batch: int, max_len: int, dtype: torch.dtype, device: torch.device):
        super().__init__(family, attn)
        self.window = attn.config.window
        self.keys = _static(torch.zeros(batch, self.n_kv, self.window, self.head_dim, dtype=dtype, device=device))
        self.values = _static(torch.zeros_like(self.keys))

    def _store(self, k: torch.Tensor, v: torch.Tensor) -> None:
        T = k.shape[2]
        slots = torch.arange(max(0, T - self.window), T, device=k.device)  # only the last `window` are needed
        self.keys.index_copy_(2, slots % self.window, k[:, :, slots])
        self.values.index_copy_(2, slots % self.window, v[:, :, slots])

    def step(self, attn: nn.Module, x: torch.Tensor, position: torch.Tensor, rope) -> torch.Tensor:
        q, k, v = self.family.qkv(attn, x, rope)
        self.keys.index_copy_(2, position % self.window, k)
        self.values.index_copy_(2, position % self.window, v)
        filled = _upto(position, self.window)  # slots 0..position until the ring is full, then all
        y = F.scaled_dot_product_attention(q, self.keys, self.values, attn_mask=filled, scale=_scale(attn),
                                           enable_gqa=self.keys.shape[1] != q.shape[1])
        return self.family.output(attn, y)


class LinearState(_ProjectedCache):
    """linear's recurrent state per key/value head: S = sum phi(k)^T v and z = sum phi(k) over the context, in fp32
    (the training form accumulates in fp32 too); a step adds its token, then each query head reads its group's
    phi(q) S / phi(q) z."""

    BUFFERS = OVERWRITTEN = ("state", "normaliser")  # a step adds its token to the sums

    def __init__(self, family, attn: nn.Module, batch: int, max_len: int, dtype: torch.dtype, device: torch.device):
        super().__init__(family, attn)
        D = self.head_dim
        self.state = _static(torch.zeros(batch, self.n_kv, D, D, dtype=torch.float32, device=device))
        self.normaliser = _static(torch.zeros(batch, self.n_kv, D, dtype=torch.float32, device=device))

    def _store(self, k: torch.Tensor, v: torch.Tensor) -> None:
        phi_k = feature_map(k).float()
        self.state += phi_k.transpose(2, 3) @ v.float()
        self.normaliser += phi_k.sum(2)

    def step(self, attn: nn.Module, x: torch.Tensor, position: torch.Tensor, rope) -> torch.Tensor:
        q, k, v = self.family.qkv(attn, x, rope)
        self._store(k, v)
        B, H, _, D = q.shape
        phi_q = feature_map(q).float().view(B, self.n_kv, H // self.n_kv, D)  # query heads by key/value head
        y = (phi_q @ self.state) / (phi_q * self.normaliser.unsqueeze(2)).sum(-1, keepdim=True)
        return self.family.output(attn, y.reshape(B, H, 1, D).to(v.dtype))


def _scale(attn: nn.Module) -> float:
    return attn.scaling if hasattr(attn, "scaling") else attn.head_dim ** -0.5


def _upto(position: torch.Tensor, slots: int) -> torch.Tensor:
    """[1, slots] mask (one query) of the slots a step at `position` ([1]) attends to: 0..position."""
    return (torch.arange(slots, device=position.device) <= position).unsqueeze(0)


def _static(buffer: torch.Tensor) -> torch.Tensor:
    """A cache buffer updated in place at a fixed address, so that a compiled step (CUDA graphs) may mutate it."""
    torch._dynamo.mark_static_address(buffer)
    return buffer


CACHES = {"kv": KVCache, "ring": RingCache, "state": LinearState}
LATENT_CACHES = {MultiHeadLatentAttention: LatentCache, RopeLatentAttention: RopeLatentCache}  # MLA's form per family


def cache_kind(variant: str, attn: nn.Module | None = None) -> type:
    """The cache class of `variant` (`VariantSpec.decode_cache`; MLA's by its module's form); `NotImplementedError`
    (recorded as unsupported) for one without."""
    kind = get_variant(variant).decode_cache
    if kind is None:
        raise NotImplementedError(f"{variant}: no decode cache (its attended set depends on later tokens, so no "
                                  "step-by-step form reproduces its training-time attention)")
    return LATENT_CACHES[type(attn)] if kind == "latent" and attn is not None else CACHES.get(kind, LatentCache)


class Decoder:
    """Greedy decoding of a `build_model` model of any family (in eval mode) with its variant's cache,
    `batch_size` sequences of at most `max_len` positions. Caches take the dtype of the model's weights (cast the
    model for bf16).

    A step has static shapes (its position is a device tensor, the caches are updated in place and attended
    through a mask of the filled slots), so it runs in any of `DECODE_MODES` (see the module docstring)."""

    def __init__(self, model: nn.Module, batch_size: int, max_len: int, mode: str = "eager"):
        if model.training:
            raise ValueError("model: call model.eval() first (dropout would make decoding differ from the forward)")
        family = self.family = arch_of(model.config).decoding(model)
        if max_len > family.max_len:
            raise ValueError(f"max_len: {max_len} is more than the model's positions (n_positions / "
                             f"max_position_embeddings: {family.max_len})")
        weight = family.weight
        if mode not in DECODE_MODES:
            raise ValueError(f"mode: one of {', '.join(DECODE_MODES)}, got {mode!r}")
        if mode == "cudagraph" and weight.device.type != "cuda":
            raise ValueError("mode 'cudagraph': CUDA graphs need the model on a CUDA device")
        self.model, self.batch_size, self.max_len, self.length = model, batch_size, max_len, 0
        variant = model.config.attnlib_variant
        self.caches = [cache_kind(variant, attn)(family, attn, batch_size, max_len, weight.dtype, weight.device)
                       for _, attn, _, _ in family.layers]
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

    def _layers(self, hidden: torch.Tensor, attend) -> torch.Tensor:
        """The family's layers in its order (pre-norm attention, residual, pre-norm MLP, residual), `attend(cache,
        attn, x)` in place of self-attention (the final norm and the head: `family.head`)."""
        for (norm_1, attn, norm_2, mlp), cache in zip(self.family.layers, self.caches):
            hidden = hidden + attend(cache, attn, norm_1(hidden))
            hidden = hidden + mlp(norm_2(hidden))
        return hidden

    def _step_logits(self, ids: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        rope = self.family.rope(position)
        hidden = self.family.embed(ids, position)
        return self.family.head(self._layers(hidden, lambda cache, attn, x: cache.step(attn, x, position, rope))[:, 0])
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
        positions = torch.arange(ids.shape[1], device=ids.device)
        rope = self.family.rope(positions)
        hidden = self._layers(self.family.embed(ids, positions), lambda cache, attn, x: cache.prefill(attn, x, rope))
        self.length = ids.shape[1]
        return self.family.head(hidden if all_logits else hidden[:, -1:])

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


def _cache_shape(model: nn.Module) -> tuple[type, int, int, int, nn.Module]:
    """The cache class of the model's variant, its layers, key/value heads and head size, and layer 0's attention."""
    family = arch_of(model.config).decoding(model)
    attn = family.layers[0][1]
    kind = cache_kind(model.config.attnlib_variant, attn)
    return kind, len(family.layers), family.kv_heads(attn) if kind in CACHES.values() else 0, \
        dims_of(model.config).head_dim, attn


def cache_bytes_per_token(model: nn.Module, dtype: torch.dtype) -> int:
    """Analytic bytes a sequence's cache grows by per token of context, all layers: 0 for a constant-size cache
    (sliding_window's ring once full, linear's state)."""
    kind, layers, n_kv, head_dim, attn = _cache_shape(model)
    size = torch.tensor([], dtype=dtype).element_size()
    if kind is KVCache:
        return layers * 2 * n_kv * head_dim * size
    if kind is LatentCache:
        return layers * model.config.kv_lora_rank * size
    if kind is RopeLatentCache:  # the latent and the shared RoPE key
        return layers * (attn.kv_lora_rank + attn.rope_dim) * size
    return 0


def step_bytes_read(model: nn.Module, batch_size: int, context_len: int, dtype: torch.dtype) -> int:
    """The least a decode step must read from memory at `context_len` tokens of context: every weight once (the
    head reads the tied embedding whole; a learned position table only the rows it uses, not counted) and the cache
    of each sequence as far as the step attends: all of it for a growing cache, the ring's filled slots, or linear's
    state. Over the card's read bandwidth (`calibrate_bandwidth`) this is the step's memory floor (the static step
    reads the whole `max_len` buffer: part of what the floor multiple shows)."""
    size = torch.tensor([], dtype=dtype).element_size()
    unread = {id(p) for p in arch_of(model.config).decoding(model).unread}
    weights = sum(p.numel() for p in model.parameters() if id(p) not in unread) * size
    kind, layers, n_kv, head_dim, _ = _cache_shape(model)
    if kind is RingCache:
        per_sequence = layers * 2 * n_kv * head_dim * min(context_len, model.config.window) * size
    elif kind is LinearState:
        per_sequence = layers * n_kv * (head_dim * head_dim + head_dim) * 4
    else:
        per_sequence = cache_bytes_per_token(model, dtype) * context_len
    return weights + batch_size * per_sequence

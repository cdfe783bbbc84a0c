"""The components of a GPT-2 forward pass, CLEAR's decomposition (Component-Level Energy Assessment via
Repetitions, ../shared/seeds/002): each runs alone on inputs of its real shapes, so that a loop of repeated calls
can be measured, and chained in order they are the whole forward pass (`forward_by_components`; the tests hold
the chain to the model's own logits for every variant, so no module is left out).

| kind | calls per forward | what |
|---|---|---|
| embedding | 1 | token and position embedding, `wte(ids) + wpe(positions)` |
| layer_norm | 2 n_layer + 1 | `ln_1`, `ln_2` of every block and the final `ln_f` |
| input_projection | n_layer | the variant's own q, k, v projections (GPT-2's `c_attn`, GQA's and LSH's narrower ones, MLA's query and latent down, norm and up) |
| attention_core | n_layer | the variant's core on `[B, H, T, D]` |
| output_projection | n_layer | `c_proj` of the attention |
| mlp | n_layer | `c_fc`, GELU, `c_proj` |
| residual_add | 2 n_layer | the block's two additions |
| lm_head | 1 | logits of every position |

Layers have the same shapes, so one layer's inputs stand for all: a component is measured once and counted
`count` times. For a training step (`training_components`) each component runs forward and backward (into its
inputs and its weights, from a fixed upstream gradient), and two more complete the step: `loss` (cross-entropy of
the logits) and `optimizer` (one AdamW step, fused on CUDA, as the trainer's). FLOPs are matmul FLOPs (the project's convention, mask-exact for the core); the elementwise
components (embedding, layer norm, residual add) have `flops=None`: they do no matmul work, so energy per FLOP is
not defined for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from transformers import GPT2LMHeadModel

from .decode import _core, _heads
from .experiments.training import next_token_loss
from .flops import BACKWARD_OVER_FORWARD, causal_attention_flops
from .model import attention_output, attention_qkv
from .registry import get_variant
from .variants.lsh import LSHAttention
from .variants.mla import MultiHeadLatentAttention

KINDS = ("embedding", "layer_norm", "input_projection", "attention_core", "output_projection", "mlp", "residual_add",
         "lm_head")
TRAINING_KINDS = (*KINDS, "loss", "optimizer")


def input_projection(attn: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The variant's own q, k, v `[B, heads, T, D]` from the block's normalised input `x` `[B, T, C]`."""
    if isinstance(attn, MultiHeadLatentAttention):
        latent = attn.kv_norm(attn.kv_down(x))
        return tuple(_heads(t, attn.head_dim) for t in (attn.q_proj(x), attn.k_up(latent), attn.v_up(latent)))
    if isinstance(attn, LSHAttention):
        qk, v = attn.project(x)
        return qk, qk, v  # shared query/key
    return attention_qkv(attn, x)


def attention_core(attn: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The variant's causal core, `[B, H, T, D]` (MLA's is SDPA over its up-projected keys and values)."""
    if isinstance(attn, MultiHeadLatentAttention):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    if isinstance(attn, LSHAttention):
        return attn.core(q, v)
    return _core(attn, q, k, v)


def forward_by_components(model: GPT2LMHeadModel, ids: torch.Tensor,
                          record: Callable[[str, int, tuple], None] | None = None) -> torch.Tensor:
    """Logits `[B, T, V]` of `ids` `[B, T]` by the components chained in GPT-2's order (eval mode: no dropout);
    `record(kind, layer, inputs)` sees every component's inputs (layer -1: outside the blocks)."""
    if model.training:
        raise ValueError("model: call model.eval() first (the components run without dropout)")
    note = record or (lambda kind, layer, inputs: None)
    t = model.transformer
    positions = torch.arange(ids.shape[1], device=ids.device)
    note("embedding", -1, (ids, positions))
    hidden = t.wte(ids) + t.wpe(positions)
    for layer, block in enumerate(t.h):
        note("layer_norm", layer, (block.ln_1, hidden))
        x = block.ln_1(hidden)
        note("input_projection", layer, (block.attn, x))
        q, k, v = input_projection(block.attn, x)
        note("attention_core", layer, (block.attn, q, k, v))
        y = attention_core(block.attn, q, k, v)
        note("output_projection", layer, (block.attn, y))
        branch = attention_output(block.attn, y)
        note("residual_add", layer, (hidden, branch))
        hidden = hidden + branch
        note("layer_norm", layer, (block.ln_2, hidden))
        x = block.ln_2(hidden)
        note("mlp", layer, (block.mlp, x))
        branch = block.mlp(x)
        note("residual_add", layer, (hidden, branch))
        hidden = hidden + branch
    note("layer_norm", -1, (t.ln_f, hidden))
    hidden = t.ln_f(hidden)
    note("lm_head", -1, (model.lm_head, hidden))
    return model.lm_head(hidden)


_RUN: dict[str, Callable[..., Any]] = {  # kind -> the call on its recorded inputs (the embedding: in `components`)
    "layer_norm": lambda norm, x: norm(x),
    "input_projection": input_projection,
    "attention_core": attention_core,
    "output_projection": attention_output,
    "mlp": lambda mlp, x: mlp(x),
    "residual_add": torch.add,
    "lm_head": lambda head, x: head(x),
}


@dataclass
class Component:
    """One component: `fn(*args)` is one call on recorded inputs of its real shapes (`run`); a forward pass calls
    it `count` times; `flops` is one call's matmul FLOPs (None: elementwise, no matmul work)."""

    kind: str
    count: int
    fn: Callable[..., Any]
    args: tuple
    flops: float | None

    def run(self) -> Any:
        return self.fn(*self.args)


def _weights(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for name, p in m.named_parameters() if name.endswith("weight") and p.dim() == 2)


def components(model: GPT2LMHeadModel, ids: torch.Tensor) -> list[Component]:
    """The forward pass's components on `ids` `[B, T]`, in `KINDS` order, each with layer 0's inputs (ln_f's
    for the final layer norm: same shape) captured from one chained forward pass."""
    inputs: dict[str, tuple] = {}
    counts: dict[str, int] = dict.fromkeys(KINDS, 0)

    def record(kind: str, layer: int, args: tuple) -> None:
        counts[kind] += 1
        inputs.setdefault(kind, args)

    with torch.no_grad():
        forward_by_components(model, ids, record)
    t, config = model.transformer, model.config
    B, T = ids.shape
    block = t.h[0]
    spec = get_variant(config.attnlib_variant)
    flops = {
        "input_projection": 2.0 * B * T * _weights(*_projection_modules(block.attn)),
        "attention_core": B * (spec.attention_flops or causal_attention_flops)(config, T),
        "output_projection": 2.0 * B * T * _weights(block.attn.c_proj),
        "mlp": 2.0 * B * T * _weights(block.mlp),
        "lm_head": 2.0 * B * T * model.lm_head.weight.numel(),
    }
    run = {**_RUN, "embedding": lambda ids, positions: t.wte(ids) + t.wpe(positions)}
    return [Component(kind, counts[kind], run[kind], inputs[kind], flops.get(kind)) for kind in KINDS]


def _projection_modules(attn: nn.Module) -> list[nn.Module]:
    """The modules of the variant's input projections (their 2-D weights are the matmul work)."""
    if isinstance(attn, MultiHeadLatentAttention):
        return [attn.q_proj, attn.kv_down, attn.k_up, attn.v_up]
    return [attn.c_attn]


def _with_backward(part: Component) -> Component:
    """`part` as forward + backward: its floating-point inputs become leaves that take gradients, its outputs get
    a fixed random upstream gradient, and its weights accumulate theirs. FLOPs: 3 x the forward's for weights
    (2 x for the backward), 1 + 2.5 x for an attention core (FlashAttention's convention, `attnlib.flops`)."""
    args = tuple(a.detach().requires_grad_() if torch.is_tensor(a) and a.is_floating_point() else a for a in part.args)
    with torch.no_grad():
        out = part.fn(*args)
    grads = tuple(torch.randn_like(o) for o in (out if isinstance(out, tuple) else (out,)))

    def forward_backward(*inputs: Any) -> None:
        out = part.fn(*inputs)
        torch.autograd.backward(out if isinstance(out, tuple) else (out,), grads)

    factor = 1 + BACKWARD_OVER_FORWARD if part.kind == "attention_core" else 3.0
    return Component(part.kind, part.count, forward_backward, args, None if part.flops is None else factor * part.flops)


def training_components(model: GPT2LMHeadModel, ids: torch.Tensor,
                        optimizer: torch.optim.Optimizer) -> list[Component]:
    """The components of a training step on `ids` `[B, T]` (labels: the next tokens), in `TRAINING_KINDS` order:
    each forward component with its backward, the head on positions 0..T-2 and the loss as the trainer computes them
    (`causal_lm_loss`: the last position predicts nothing), and `optimizer.step()` (on gradients the components
    left; its own FLOPs are not matmul work)."""
    forward = components(model, ids)
    head = forward[-1]
    T = ids.shape[1]
    forward[-1] = Component("lm_head", 1, head.fn, (head.args[0], head.args[1][:, :-1]), head.flops * (T - 1) / T)
    parts = [_with_backward(part) for part in forward]
    with torch.no_grad():
        logits = forward[-1].run().detach()

    def loss(logits: torch.Tensor, labels: torch.Tensor) -> None:
        next_token_loss(logits, labels).backward()

    for p in model.parameters():  # the step reads every gradient: give each one (the components' are the same shape)
        p.grad = torch.zeros_like(p) if p.grad is None else p.grad
    return parts + [Component("loss", 1, loss, (logits.requires_grad_(), ids), None),
                    Component("optimizer", 1, optimizer.step, (), None)]

"""The components of a forward pass in any model family, CLEAR's decomposition (Component-Level Energy
Assessment via Repetitions, ../shared/seeds/002): each runs alone on inputs of its real shapes, so that a loop of
repeated calls can be measured, and chained in order they are the whole forward pass (`forward_by_components`; the
tests hold the chain to the model's own logits for every variant of every family, so no module is left out). The
family's `Decoding` (`attnlib.archs`) gives its parts and order; a variant with its own attention module gives its
split itself (`project`, its input projections, and `core`).

| kind | calls per forward | what |
|---|---|---|
| embedding | 1 | token embedding and positions: GPT-2's `wte(ids) + wpe(positions)`, Llama's `embed_tokens(ids)` and its RoPE tables (computed once per pass, as LlamaModel does) |
| layer_norm | 2 n_layer + 1 | the family's norms (GPT-2's LayerNorms `ln_1`, `ln_2`, `ln_f`; Llama's RMSNorms) |
| input_projection | n_layer | the variant's own q, k, v projections (the family's, with RoPE where it has it; GQA's and LSH's narrower ones; MLA's query and latent down, norm and up, and its rotated RoPE key) |
| attention_core | n_layer | the variant's core on `[B, H, T, D]` |
| output_projection | n_layer | the attention's output projection (`c_proj`, `o_proj`) |
| mlp | n_layer | GPT-2's `c_fc`, GELU, `c_proj`; Llama's SwiGLU |
| residual_add | 2 n_layer | the layer's two additions |
| lm_head | 1 | logits of every position |

Layers have the same shapes, so one layer's inputs stand for all: a component is measured once and counted
`count` times. For a training step (`training_components`) each component runs forward and backward (into its
inputs and its weights, from a fixed upstream gradient), and two more complete the step: `loss` (cross-entropy of
the logits) and `optimizer` (one AdamW step, fused on CUDA, as the trainer's). FLOPs are matmul FLOPs (the
project's convention, mask-exact for the core); the elementwise components (embedding, norms, residual add) have
`flops=None`: they do no matmul work, so energy per FLOP is not defined for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from transformers import PreTrainedModel

from .archs import arch_of
from .decode import _core
from .experiments.training import next_token_loss
from .flops import BACKWARD_OVER_FORWARD, causal_attention_flops
from .registry import get_variant

KINDS = ("embedding", "layer_norm", "input_projection", "attention_core", "output_projection", "mlp", "residual_add",
         "lm_head")
TRAINING_KINDS = (*KINDS, "loss", "optimizer")


def input_projection(family: Any, attn: nn.Module, x: torch.Tensor, rope: Any) -> tuple[torch.Tensor, ...]:
    """The core's inputs `[B, heads, T, D]` from the layer's normalised input `x` `[B, T, C]`: the variant module's
    own `project`, or the family's q, k, v projections (RoPE applied where the family has it)."""
    own = getattr(attn, "project", None)
    return own(x, rope) if own is not None else family.qkv(attn, x, rope)


def attention_core(attn: nn.Module, *inputs: torch.Tensor) -> torch.Tensor:
    """The variant's causal core, `[B, H, T, D]`: the variant module's own `core`, or its attention function on
    q, k, v (SDPA for a module without either, as its forward)."""
    own = getattr(attn, "core", None)
    return own(*inputs) if own is not None else _core(attn, *inputs)


def forward_by_components(model: PreTrainedModel, ids: torch.Tensor,
                          record: Callable[[str, int, tuple], None] | None = None) -> torch.Tensor:
    """Logits `[B, T, V]` of `ids` `[B, T]` by the components chained in the family's order (eval mode: no
    dropout); `record(kind, layer, inputs)` sees every component's inputs (layer -1: outside the layers)."""
    if model.training:
        raise ValueError("model: call model.eval() first (the components run without dropout)")
    note = record or (lambda kind, layer, inputs: None)
    family = arch_of(model.config).decoding(model)
    positions = torch.arange(ids.shape[1], device=ids.device)
    note("embedding", -1, (family, ids, positions))
    hidden, rope = _embedding(family, ids, positions)
    for layer, (norm_1, attn, norm_2, mlp) in enumerate(family.layers):
        note("layer_norm", layer, (norm_1, hidden))
        x = norm_1(hidden)
        note("input_projection", layer, (family, attn, x, rope))
        inputs = input_projection(family, attn, x, rope)
        note("attention_core", layer, (attn, *inputs))
        y = attention_core(attn, *inputs)
        note("output_projection", layer, (attn, y))
        branch = family.output(attn, y)
        note("residual_add", layer, (hidden, branch))
        hidden = hidden + branch
        note("layer_norm", layer, (norm_2, hidden))
        x = norm_2(hidden)
        note("mlp", layer, (mlp, x))
        branch = mlp(x)
        note("residual_add", layer, (hidden, branch))
        hidden = hidden + branch
    note("layer_norm", -1, (family.final_norm, hidden))
    hidden = family.final_norm(hidden)
    note("lm_head", -1, (family.lm_head, hidden))
    return family.lm_head(hidden)


def _embedding(family: Any, ids: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """The hidden states entering layer 0 and the RoPE tables every layer reads (None without RoPE)."""
    return family.embed(ids, positions), family.rope(positions)


_RUN: dict[str, Callable[..., Any]] = {  # kind -> the call on its recorded inputs (the output projection: per family)
    "embedding": _embedding,
    "layer_norm": lambda norm, x: norm(x),
    "input_projection": input_projection,
    "attention_core": attention_core,
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
    """Entries of the modules' 2-D weight matrices: what a token is multiplied by (norm scales are 1-D)."""
    return sum(p.numel() for m in modules for name, p in m.named_parameters() if name.endswith("weight") and p.dim() == 2)


def components(model: PreTrainedModel, ids: torch.Tensor) -> list[Component]:
    """The forward pass's components on `ids` `[B, T]`, in `KINDS` order, each with layer 0's inputs (the final
    norm's for the norms: same shape) captured from one chained forward pass."""
    inputs: dict[str, tuple] = {}
    counts: dict[str, int] = dict.fromkeys(KINDS, 0)

    def record(kind: str, layer: int, args: tuple) -> None:
        counts[kind] += 1
        inputs.setdefault(kind, args)

    with torch.no_grad():
        forward_by_components(model, ids, record)
    config = model.config
    family = arch_of(config).decoding(model)
    B, T = ids.shape
    _, attn, _, mlp = family.layers[0]
    output = family.output_projection(attn)
    spec = get_variant(config.attnlib_variant)
    flops = {
        "input_projection": 2.0 * B * T * (_weights(attn) - _weights(output)),
        "attention_core": B * (spec.attention_flops or causal_attention_flops)(config, T),
        "output_projection": 2.0 * B * T * _weights(output),
        "mlp": 2.0 * B * T * _weights(mlp),
        "lm_head": 2.0 * B * T * family.lm_head.weight.numel(),
    }
    run = {**_RUN, "output_projection": family.output}
    return [Component(kind, counts[kind], run[kind], inputs[kind], flops.get(kind)) for kind in KINDS]


def _float_tensors(out: Any) -> list[torch.Tensor]:
    """The floating-point tensors of a component's output (a tensor, or nested tuples with None for what a family
    lacks), in order."""
    if torch.is_tensor(out):
        return [out] if out.is_floating_point() else []
    return [t for o in (out if isinstance(out, tuple) else ()) for t in _float_tensors(o)]


def _with_backward(part: Component) -> Component:
    """`part` as forward + backward: its floating-point inputs become leaves that take gradients, its outputs get
    a fixed random upstream gradient, and its weights accumulate theirs. FLOPs: 3 x the forward's for weights
    (2 x for the backward), 1 + 2.5 x for an attention core (FlashAttention's convention, `attnlib.flops`)."""
    args = tuple(a.detach().requires_grad_() if torch.is_tensor(a) and a.is_floating_point() else a for a in part.args)
    with torch.no_grad():
        grads = [torch.randn_like(o) for o in _float_tensors(part.fn(*args))]

    def forward_backward(*inputs: Any) -> None:
        # the outputs gradients flow from (the embedding's RoPE tables come from a buffer: none)
        pairs = [(o, g) for o, g in zip(_float_tensors(part.fn(*inputs)), grads) if o.requires_grad]
        torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])

    factor = 1 + BACKWARD_OVER_FORWARD if part.kind == "attention_core" else 3.0
    return Component(part.kind, part.count, forward_backward, args, None if part.flops is None else factor * part.flops)


def training_components(model: PreTrainedModel, ids: torch.Tensor,
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

"""CLEAR's components of a forward pass: chained they are the whole model for every variant of every family
(nothing left out), each runs alone on its real shapes, and their counts and FLOPs add up to the model's."""

from __future__ import annotations

import pytest
import torch

import attnlib
from attnlib.archs import arch_of
from attnlib.components import KINDS, TRAINING_KINDS, components, forward_by_components, training_components
from attnlib.experiments.training import causal_lm_loss, next_token_loss
from attnlib.flops import causal_attention_flops, matmul_parameters
from conftest import GPT2_VARIANTS, LLAMA_TINY_PARAMS, LLAMA_VARIANTS, random_tokens, tiny_llama, tiny_model

FAMILY_VARIANTS = [("gpt2", v) for v in GPT2_VARIANTS] + [("llama", v) for v in LLAMA_VARIANTS]
LAYERS = 2  # both tiny families


def tiny(arch: str, variant: str) -> torch.nn.Module:
    """A tiny eval-mode model of the family (the llama family's per-variant sizes: the key/value head axis at its
    own counts, MLA's small latents)."""
    if arch == "gpt2":
        return tiny_model(variant)
    return tiny_llama(variant, **LLAMA_TINY_PARAMS.get(variant, {})).eval()


def outputs(out) -> list[torch.Tensor]:
    """The tensors of a component's output, nested tuples flattened (None: what a family lacks, GPT-2's RoPE)."""
    return [out] if torch.is_tensor(out) else [t for o in (out or ()) for t in outputs(o)]


@torch.no_grad()
@pytest.mark.parametrize("arch, variant", FAMILY_VARIANTS)
def test_components_chained_are_the_whole_forward_pass(arch: str, variant: str) -> None:
    model = tiny(arch, variant)
    ids = random_tokens(2, seq_len=32)
    torch.testing.assert_close(forward_by_components(model, ids), model(ids).logits, rtol=1e-5, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("arch, variant", [("gpt2", v) for v in ["sdpa", "gqa", "mla", "linear", "lsh",
                                                                "sliding_window"]]
                         + [("llama", v) for v in ["sdpa", "mqa", "mla", "linear", "sliding_window"]])
def test_each_component_runs_alone_with_its_count_and_flops(arch: str, variant: str) -> None:
    """Every kind once, counted as often as a forward pass calls it; a call on the recorded inputs gives the same
    result twice (the repetition harness needs nothing else); the matmul FLOPs of all components are the
    model's forward matmul FLOPs plus the cores'."""
    model = tiny(arch, variant)
    ids = random_tokens(2, seq_len=32)
    parts = components(model, ids)
    layers = LAYERS
    assert [c.kind for c in parts] == list(KINDS)
    assert {c.kind: c.count for c in parts} == {
        "embedding": 1, "layer_norm": 2 * layers + 1, "input_projection": layers, "attention_core": layers,
        "output_projection": layers, "mlp": layers, "residual_add": 2 * layers, "lm_head": 1}
    for part in parts:
        first, second = part.run(), part.run()
        assert len(outputs(first)) == len(outputs(second)) >= 1
        for a, b in zip(outputs(first), outputs(second)):
            assert torch.equal(a, b)
    matmul = sum(c.count * c.flops for c in parts if c.flops is not None and c.kind != "attention_core")
    B, T = ids.shape
    assert matmul == pytest.approx(2 * B * T * matmul_parameters(model))
    core = next(c for c in parts if c.kind == "attention_core")
    spec = attnlib.get_variant(variant)
    assert core.flops == pytest.approx(B * (spec.attention_flops or causal_attention_flops)(model.config, T))
    assert all(c.flops is None for c in parts if c.kind in ("embedding", "layer_norm", "residual_add"))


def test_components_need_eval_mode() -> None:
    model = tiny_model("sdpa").train()
    with pytest.raises(ValueError, match="eval"):
        forward_by_components(model, random_tokens(1))


@pytest.mark.parametrize("arch, variant", [("gpt2", "sdpa"), ("gpt2", "mla"), ("gpt2", "linear"), ("llama", "sdpa"),
                                           ("llama", "mla")])
def test_training_components_run_forward_and_backward(arch: str, variant: str) -> None:
    """Each training component runs its forward and backward (its weights get gradients), the loss backpropagates
    into the logits, the optimizer step runs on the gradients the components left; FLOPs are 3 x the forward's
    (3.5 x for the core)."""
    model = tiny(arch, variant)
    ids = random_tokens(2, seq_len=32)
    forward = {c.kind: c for c in components(model, ids)}
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0)
    parts = training_components(model, ids, optimizer)
    assert [c.kind for c in parts] == list(TRAINING_KINDS)
    model.zero_grad(set_to_none=True)
    for part in parts[:-1]:
        part.run()
        if part.flops is not None:
            factor = 3.5 if part.kind == "attention_core" else 3.0
            positions = (ids.shape[1] - 1) / ids.shape[1] if part.kind == "lm_head" else 1.0  # the trainer's head
            assert part.flops == pytest.approx(factor * positions * forward[part.kind].flops)
    mlp = arch_of(model.config).decoding(model).layers[0][3]
    assert all(p.grad.abs().sum() > 0 for p in mlp.parameters()) and model.lm_head.weight.grad.abs().sum() > 0
    assert parts[-2].args[0].grad is not None  # the loss's gradient reached the logits
    with torch.no_grad():  # the loss component is the trainer's loss on the same logits
        hidden = next(c for c in parts if c.kind == "lm_head").args[1]
        torch.testing.assert_close(next_token_loss(parts[-2].args[0], ids),
                                   causal_lm_loss(torch.cat([hidden, hidden[:, -1:]], 1), ids, model.lm_head))
    before = [p.detach().clone() for p in model.parameters()]
    parts[-1].run()  # lr 0: the step's work, the same weights
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))

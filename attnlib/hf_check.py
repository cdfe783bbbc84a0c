"""Check attnlib's attention functions inside any transformers causal LM against the model's own attention.

A function plugged into another model must give that model's result or raise an error that names it: never a silently
wrong one. `check_function` runs one function through the cases where drop-in cores go wrong (padding on either
side, `generate` with the dynamic and the static cache, gradients) and compares each with the model's reference
implementation on the same weights, at the precision of the model's dtype (fp32 on a CPU in the tests, bf16 with the
real kernels on a GPU: `scripts/gpu_check_hf_functions.py`). A generated sequence is judged by its logits, teacher
forced: each step's logits with the cache against the reference's full forward pass over the same tokens, so that a
bf16 near-tie between two tokens is not mistaken for a wrong cache.

    from attnlib.hf_check import check_function, tiny_causal_lm
    for row in check_function(tiny_causal_lm("qwen2"), "attnlib_flex"):
        print(row)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from .registry import VARIANTS

# The functions that claim to equal a model's own attention: the exact cores, and the window read from the model's
# config (the other variants change the function or bring their own module).
DROP_IN = ("baseline", "sdpa", "flash", "cudnn", "flex", "sliding_window")
CASES = ("padded_left", "padded_right", "generate_dynamic", "generate_static", "gradients")
VOCAB = 97
SMALL = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=128)
FAMILIES = ("llama", "qwen2", "mistral", "gpt2", "gemma2")


@dataclass(frozen=True)
class CaseResult:
    """One cell of the table: `status` is "same" (within `tolerance` of the reference), "named error" (it refused,
    naming the variant), or a failure: "differs" or "unclear error". `relative_difference`: ||ours - reference|| /
    ||reference|| over the case's logits or gradients, where the function ran."""

    family: str
    function: str
    case: str
    status: str
    relative_difference: float | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("same", "named error")


def tiny_causal_lm(family: str, dtype: torch.dtype = torch.float32, device: str = "cpu") -> torch.nn.Module:
    """A small random causal LM of `family` (one of `FAMILIES`): GQA (4 query, 2 key/value heads) where the family
    has it; Mistral with a window of 6 tokens, shorter than the prompts; Gemma 2 with soft-capped attention logits
    and alternating sliding and full layers."""
    from transformers import (Gemma2Config, Gemma2ForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                              LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM)

    torch.manual_seed(0)
    models = {
        "llama": lambda: LlamaForCausalLM(LlamaConfig(**SMALL)),
        "qwen2": lambda: Qwen2ForCausalLM(Qwen2Config(**SMALL)),
        "mistral": lambda: MistralForCausalLM(MistralConfig(**SMALL, sliding_window=6)),
        "gpt2": lambda: GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=128,
                                                   bos_token_id=0, eos_token_id=0)),
        "gemma2": lambda: Gemma2ForCausalLM(Gemma2Config(**{**SMALL, "head_dim": 16}, sliding_window=6,
                                                         attn_logit_softcapping=5.0, query_pre_attn_scalar=16)),
    }
    if family not in models:
        raise ValueError(f"tiny_causal_lm: unknown family {family!r}; one of {', '.join(models)}")
    return models[family]().to(device=device, dtype=dtype).eval()


def reference_implementation(model: torch.nn.Module) -> str:
    """The attention a model is meant to run with: "eager" where it soft-caps its logits (sdpa cannot), else sdpa."""
    return "eager" if getattr(model.config, "attn_logit_softcapping", None) else "sdpa"


def use(model: torch.nn.Module, implementation: str) -> None:
    """Set `model`'s attention implementation; directly in the config where transformers refuses the name for this
    model (Gemma 2 accepts only implementations it knows), as a user would."""
    try:
        model.set_attn_implementation(implementation)
    except ValueError:
        model.config._attn_implementation = implementation
        for sub in model.modules():
            if getattr(sub, "config", None) is not None and sub.config is not model.config:
                sub.config._attn_implementation = implementation


def tolerance(model: torch.nn.Module) -> float:
    """The relative difference two exact cores may show: float32 rounding, or bf16's."""
    return 1e-4 if next(model.parameters()).dtype == torch.float32 else 3e-2


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in fp32, wherever each tensor lives."""
    a, b = a.float().cpu(), b.float().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def check_function(model: torch.nn.Module, function: str, family: str = "", cases: tuple[str, ...] = CASES,
                   max_new_tokens: int = 12) -> list[CaseResult]:
    """`function` (a name in transformers' AttentionInterface, e.g. "attnlib_flex") inside `model`, case by case,
    against the model's `reference_implementation` on the same weights. `ValueError` before any work for a name
    transformers does not know or a case not in `CASES`."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if function != "eager" and function not in ALL_ATTENTION_FUNCTIONS:
        raise ValueError(f"check_function: no attention function {function!r} is registered with transformers; "
                         f"known: eager, {', '.join(ALL_ATTENTION_FUNCTIONS)}")
    if unknown := sorted(set(cases) - set(CASES)):
        raise ValueError(f"check_function: unknown case(s) {', '.join(unknown)}; the cases are {', '.join(CASES)}")
    variant = next((n for n, s in VARIANTS.items() if s.attention_function is not None
                    and s.attn_implementation == function), function)
    device = next(model.parameters()).device
    ids = torch.randint(1, VOCAB, (2, 10), generator=torch.Generator().manual_seed(1)).to(device)
    reference = reference_implementation(model)
    out = []
    for case in cases:
        try:
            difference = _CASES[case](model, function, reference, ids, max_new_tokens)
            status = "same" if difference <= tolerance(model) else "differs"
            out.append(CaseResult(family, function, case, status, difference))
        except (NotImplementedError, ValueError) as refusal:
            named = variant in str(refusal)
            out.append(CaseResult(family, function, case, "named error" if named else "unclear error",
                                  detail=str(refusal)[:300]))
        except Exception as failure:  # a crash is a failure with its reason, not a stop of the table
            out.append(CaseResult(family, function, case, "unclear error", detail=f"{type(failure).__name__}: "
                                  f"{str(failure)[:300]}"))
    use(model, reference)
    return out


def _padded(side: str):
    def run(model, function: str, reference: str, ids: torch.Tensor, _: int) -> float:
        mask = torch.ones_like(ids)
        if side == "left":
            mask[1, :3] = 0
        else:
            mask[1, -3:] = 0
        logits = {}
        for implementation in (reference, function):
            use(model, implementation)
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                logits[implementation] = model(ids, attention_mask=mask).logits * mask.unsqueeze(-1)
        return relative_error(logits[function], logits[reference])
    return run


def _generate(cache: str):
    def run(model, function: str, reference: str, ids: torch.Tensor, max_new_tokens: int) -> float:
        use(model, function)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=0, output_logits=True, return_dict_in_generate=True,
                                 cache_implementation="static" if cache == "static" else None)
            stepped = torch.stack(out.logits, dim=1)  # [B, new, V]: each step's logits, from the cache
            use(model, reference)
            full = model(out.sequences[:, :-1]).logits[:, ids.shape[1] - 1:]  # the same tokens, no cache
        return relative_error(stepped, full)
    return run


def _gradients(model, function: str, reference: str, ids: torch.Tensor, _: int) -> float:
    grads = {}
    for implementation in (reference, function):
        use(model, implementation)
        model.zero_grad(set_to_none=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model(ids, labels=ids).loss.backward()
        grads[implementation] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    model.zero_grad(set_to_none=True)
    return relative_error(grads[function], grads[reference])


_CASES = {"padded_left": _padded("left"), "padded_right": _padded("right"), "generate_dynamic": _generate("dynamic"),
          "generate_static": _generate("static"), "gradients": _gradients}

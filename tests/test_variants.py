"""Every variant is causal, mixes tokens, trains, and matches its exact reference (CPU, fp32, tiny GPT-2)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import attnlib
from attnlib.variants.flex import causal_mask_mod
from attnlib.variants import linear
from attnlib.variants.linear import chunked_linear_attention, feature_map, naive_linear_attention
from attnlib.variants.lsh import lsh_attention
from attnlib.variants.sliding_window import sliding_window_mask_mod
from conftest import GPT2_VARIANTS, SEQ_LEN, TINY, random_tokens, tiny_model


@torch.no_grad()
@pytest.mark.parametrize("t", [1, 17, 40, 63])
def test_causal(variant: str, t: int) -> None:
    """Changing tokens at positions >= t leaves the logits at positions < t unchanged."""
    model = tiny_model(variant)
    x = random_tokens()
    changed = x.clone()
    changed[:, t:] = random_tokens(seed=2)[:, t:]
    torch.testing.assert_close(model(changed).logits[:, :t], model(x).logits[:, :t], rtol=0, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("t", [1, 16, 33, 63])
def test_token_mixing(variant: str, t: int) -> None:
    """Changing the token at t - 1 changes the logits at t."""
    model = tiny_model(variant)
    x = random_tokens()
    changed = x.clone()
    changed[:, t - 1] = (x[:, t - 1] + 1) % TINY["vocab_size"]
    difference = (model(changed).logits[:, t] - model(x).logits[:, t]).abs().amax(dim=-1)
    assert (difference > 1e-4).all(), difference


EXACT = {
    "sdpa": {},
    "flash": {},
    "cudnn": {},
    "flex": {},
    "sliding_window": {"window": SEQ_LEN},
    "gqa": {"n_kv_head": TINY["n_head"]},
}


@torch.no_grad()
@pytest.mark.parametrize("name", list(EXACT))
def test_exact_variants_match_baseline(name: str) -> None:
    """Same weights, same logits as GPT-2's eager attention (fp32)."""
    baseline = tiny_model("baseline")
    model = tiny_model(name, **EXACT[name])
    model.load_state_dict(baseline.state_dict())
    x = random_tokens()
    torch.testing.assert_close(model(x).logits, baseline(x).logits, rtol=1e-5, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("mask_mod", [causal_mask_mod, sliding_window_mask_mod(7)], ids=["causal", "window7"])
def test_flex_kernel_matches_dense_mask(mask_mod) -> None:
    """The FlexAttention kernel with our BlockMask equals SDPA with the dense mask of the same mask_mod
    (FlexAttention runs forward-only on CPU, so this is the check of the block mask itself)."""
    from torch.nn.attention import flex_attention as flex_module
    from torch.nn.attention.flex_attention import create_block_mask, create_mask, flex_attention

    flex_module._FLEX_ATTENTION_DISABLE_COMPILE_DEBUG = True  # eager on purpose: silence the "not compiled" warning

    q, k, v = torch.randn(3, 2, 4, 128, 16).unbind(0)
    block = create_block_mask(mask_mod, None, None, 128, 128, device="cpu")
    dense = create_mask(mask_mod, None, None, 128, 128, device="cpu")
    torch.testing.assert_close(
        flex_attention(q, k, v, block_mask=block), F.scaled_dot_product_attention(q, k, v, attn_mask=dense),
        rtol=1e-5, atol=1e-5,
    )


def test_compiled_attention_never_falls_back_to_eager_across_the_long_context_grid() -> None:
    """One compiled function serves every length of the long-context grid, with and without autograd (16 entries,
    past dynamo's default of 8): each call is compiled, and a call past the limit is an error, never eager
    `flex_attention` with its T x T scores."""
    from torch._dynamo.testing import CompileCounter

    from attnlib.experiments.longcontext import SEQ_LENS

    counter = CompileCounter()
    scale = torch.compile(lambda x: x * 2, backend=counter, dynamic=False)
    for grad in (False, True):
        for t in SEQ_LENS:
            scale(torch.ones(t // 512, requires_grad=grad))
    assert counter.frame_count == 2 * len(SEQ_LENS)
    assert torch._dynamo.config.fail_on_recompile_limit_hit


@pytest.mark.parametrize("chunk_size", [1, 8, 64, 24])  # 24 does not tile T = 64: the last chunk is padded
def test_linear_chunked_equals_naive(chunk_size: int) -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 64, 16, dtype=torch.float64, requires_grad=True) for _ in range(3))
    fq, fk = feature_map(q), feature_map(k)
    chunked = chunked_linear_attention(fq, fk, v, chunk_size)
    naive = naive_linear_attention(fq, fk, v)
    torch.testing.assert_close(chunked, naive)
    grads = torch.autograd.grad(chunked.sum(), (q, k, v), retain_graph=True)
    grads_ref = torch.autograd.grad(naive.sum(), (q, k, v))
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref)


def exact_fla_chunk_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand in for fla's chunk kernels (Triton, CUDA only) with the exact unnormalised sums they compute on
    `[B, T, H, D]` inputs, so that the custom-op wiring around them runs on the host. Like fla's kernels, they
    return freshly allocated contiguous `[B, T, H, D]` tensors, whatever the layout of their inputs."""
    def heads_first(*tensors):
        return (t.transpose(1, 2) for t in tensors)

    def tokens_first(*tensors):
        return (t.transpose(1, 2).contiguous() for t in tensors)

    def forward(q, k, v, scale, **_):
        q, k, v = heads_first(q, k, v)
        return (*tokens_first((q @ k.transpose(-1, -2)).tril() * scale @ v), None)

    def backward(q, k, v, do, scale, **_):  # by hand: a custom op runs below autograd
        q, k, v, do = heads_first(q, k, v, do)
        scores, grad_scores = (q @ k.transpose(-1, -2)).tril() * scale, (do @ v.transpose(-1, -2)).tril() * scale
        dq, dk, dv = grad_scores @ k, grad_scores.transpose(-1, -2) @ q, scores.transpose(-1, -2) @ do
        return (*tokens_first(dq, dk, dv), None, None)

    monkeypatch.setattr(linear, "chunk_simple_gla_fwd", forward)
    monkeypatch.setattr(linear, "chunk_simple_gla_bwd", backward)


def test_linear_fla_op_compiles_into_one_graph_with_exact_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA path (`fla_causal_linear` then `normalise`) equals the quadratic reference, gradients included,
    and `torch.compile` traces it whole (fullgraph: no break around the kernels, its fake and backward registered)."""
    exact_fla_chunk_kernels(monkeypatch)
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 64, 16, dtype=torch.float64, requires_grad=True) for _ in range(3))

    def attention(q, k, v):
        fq, fk, v = (t.transpose(1, 2) for t in (feature_map(q), feature_map(k), v))
        return linear.normalise(linear.fla_causal_linear(fq, fk, v), fq, fk).transpose(1, 2)

    torch._dynamo.reset()
    out = torch.compile(attention, fullgraph=True, backend="aot_eager")(q, k, v)
    naive = naive_linear_attention(feature_map(q), feature_map(k), v)
    torch.testing.assert_close(out, naive, rtol=1e-6, atol=1e-6)  # the 1e-10 in fla's denominator
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    grads_ref = torch.autograd.grad(naive.sum(), (q, k, v))
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-6, atol=1e-6)


def test_linear_fla_op_fakes_match_its_kernels_on_a_heads_first_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    """`torch.compile` plans memory from the op's fake kernels: their shapes and strides must be those the kernels
    return. A llama layer hands the op `[B, T, H, D]` views of `[B, H, T, D]` tensors, whose strides `empty_like`
    would copy while fla returns contiguous gradients (the compiled 1B run failed on exactly that)."""
    exact_fla_chunk_kernels(monkeypatch)
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 64, 16, dtype=torch.float64).exp().transpose(1, 2).requires_grad_()
               for _ in range(3))
    assert not q.is_contiguous()
    torch.library.opcheck(linear.fla_causal_linear, (q, k, v))
    grad = torch.randn(1, 64, 2, 16, dtype=torch.float64)
    torch.library.opcheck(linear.fla_causal_linear_backward, (q.detach(), k.detach(), v.detach(), grad))


def test_linear_fla_path_gets_one_dtype_from_rotated_queries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under autocast a RoPE model hands the core fp32 queries and keys (rotated by fp32 cos/sin) beside bf16 values;
    fla's Triton kernels do not compile on mixed dtypes, so the CUDA path casts all three to the values' dtype and
    still equals the reference at that precision."""
    exact_fla_chunk_kernels(monkeypatch)
    seen = []
    kernel = linear.chunk_simple_gla_fwd
    monkeypatch.setattr(linear, "chunk_simple_gla_fwd", lambda q, k, v, **kw: (seen.append({q.dtype, k.dtype, v.dtype})
                                                                          or kernel(q, k, v, **kw)))
    monkeypatch.setattr(linear, "uses_fla", lambda query: True)
    torch.manual_seed(0)
    q, k = (torch.randn(1, 2, 64, 16) for _ in range(2))
    v = torch.randn(1, 2, 64, 16).bfloat16()
    out, _ = linear.linear_attention(None, q, k, v, None)
    assert seen == [{torch.bfloat16}] and out.dtype == torch.bfloat16
    naive = naive_linear_attention(feature_map(q), feature_map(k), v.float()).transpose(1, 2)
    torch.testing.assert_close(out.float(), naive, rtol=2e-2, atol=2e-2)


def shared_qk_reference(qk: torch.Tensor, v: torch.Tensor, visible: torch.Tensor, scaling: float) -> tuple:
    """Dense shared-QK attention under a boolean `visible` [.., T, T] mask (self excluded), where a token with
    nothing visible attends to itself. Returns (out, logsumexp)."""
    T = qk.shape[-2]
    scores = (qk @ F.normalize(qk, dim=-1).transpose(-1, -2)) * scaling
    eye = torch.eye(T, dtype=torch.bool)
    scores = scores.masked_fill(~visible, float("-inf")).masked_fill(eye, -5e4)
    lse = scores.logsumexp(-1, keepdim=True)
    return (scores - lse).exp() @ v, lse


def test_lsh_one_bucket_one_chunk_is_full_causal_shared_qk() -> None:
    torch.manual_seed(0)
    qk, v = torch.randn(2, 2, 3, 32, 8, dtype=torch.float64).unbind(0)
    rotations = torch.zeros(8, 1, 0, dtype=torch.float64)  # one bucket
    out = lsh_attention(qk, v, rotations, chunk_size=32, scaling=8**-0.5)
    strictly_causal = torch.ones(32, 32, dtype=torch.bool).tril(-1)
    torch.testing.assert_close(out, shared_qk_reference(qk, v, strictly_causal, 8**-0.5)[0])


def test_lsh_matches_brute_force_bucket_reference() -> None:
    """Several buckets, rounds and chunks: each round equals dense attention over the last `chunk_size`
    same-bucket predecessors, and rounds combine by their log-sum-exp."""
    torch.manual_seed(0)
    B, H, T, D, n_hashes, n_buckets, chunk = 2, 2, 48, 8, 3, 4, 8
    qk, v = torch.randn(2, B, H, T, D, dtype=torch.float64).unbind(0)
    rotations = torch.randn(D, n_hashes, n_buckets // 2, dtype=torch.float64)
    out = lsh_attention(qk, v, rotations, chunk_size=chunk, scaling=D**-0.5)

    rotated = torch.einsum("bhtd,dnr->bhntr", F.normalize(qk, dim=-1), rotations)
    buckets = torch.cat([rotated, -rotated], -1).argmax(-1)  # [B, H, n, T]
    outs, lses = [], []
    for r in range(n_hashes):
        visible = torch.zeros(B, H, T, T, dtype=torch.bool)
        for b in range(B):
            for h in range(H):
                for i in range(T):
                    same = [j for j in range(i) if buckets[b, h, r, j] == buckets[b, h, r, i]]
                    visible[b, h, i, same[-chunk:]] = True
        o, lse = shared_qk_reference(qk, v, visible, D**-0.5)
        outs.append(o)
        lses.append(lse)
    weights = torch.softmax(torch.stack(lses), dim=0)
    torch.testing.assert_close(out, (torch.stack(outs) * weights).sum(0))


@torch.no_grad()
def test_mla_matches_explicit_reference() -> None:
    model = tiny_model("mla")
    attn = model.transformer.h[0].attn
    x = torch.randn(2, SEQ_LEN, TINY["n_embd"])
    H, D = TINY["n_head"], TINY["n_embd"] // TINY["n_head"]

    def linear(conv, t):  # transformers' Conv1D: t @ W + b with W [in, out]
        return t @ conv.weight + conv.bias

    latent = attn.kv_norm(linear(attn.kv_down, x))
    latent_ref = linear(attn.kv_down, x)
    latent_ref = latent_ref * torch.rsqrt(latent_ref.pow(2).mean(-1, keepdim=True) + attn.kv_norm.eps) * attn.kv_norm.weight
    torch.testing.assert_close(latent, latent_ref)
    q, k, v = (linear(p, t).view(2, SEQ_LEN, H, D).transpose(1, 2)
               for p, t in ((attn.q_proj, x), (attn.k_up, latent_ref), (attn.v_up, latent_ref)))
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(D)
    scores = scores.masked_fill(~torch.ones(SEQ_LEN, SEQ_LEN, dtype=torch.bool).tril(), float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(2, SEQ_LEN, -1)
    torch.testing.assert_close(attn(x)[0], linear(attn.c_proj, y), rtol=1e-5, atol=1e-5)


def test_gradients_finite_and_nonzero(variant: str) -> None:
    model = tiny_model(variant).train()
    x = random_tokens()
    model(x, labels=x).loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{variant}: no gradient for {name}"
        assert torch.isfinite(p.grad).all(), f"{variant}: non-finite gradient for {name}"
        assert p.grad.abs().sum() > 0, f"{variant}: zero gradient for {name}"


@torch.no_grad()
def test_bf16_forward(variant: str) -> None:
    model = tiny_model(variant).to(torch.bfloat16)
    x = random_tokens()
    try:
        logits = model(x).logits
    except RuntimeError as error:  # a CPU without bf16 kernels for some op
        pytest.skip(f"bf16 not supported on this CPU: {error}")
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    reference = tiny_model(variant)(x).logits
    assert (logits.float() - reference).abs().max() < 0.1 * reference.abs().max()


def test_attention_parameter_counts() -> None:
    """At GPT-2 small width, gqa and mla have fewer attention parameters than baseline."""
    counts = {name: attnlib.attention_parameters(attnlib.build_model(name, n_layer=1)) for name in GPT2_VARIANTS}
    print("\nattention parameters per layer, GPT-2 small width:")
    for name, count in counts.items():
        print(f"  {name:15s} {count:>10,d}")
    assert counts["gqa"] < counts["baseline"]
    assert counts["mla"] < counts["baseline"]
    for name in ("sdpa", "flash", "cudnn", "flex", "sliding_window", "linear"):
        assert counts[name] == counts["baseline"]


@torch.no_grad()
def test_any_sequence_length_on_cpu(variant: str) -> None:
    """T = 50 and 37 tile no chunk or block size (linear's and LSH's 16-token chunks, FlexAttention's blocks):
    what a prefix sees is exactly what the prefix alone gives (causal through any padding), and an exact
    variant still equals materialised attention."""
    model = tiny_model(variant, **EXACT.get(variant, {}))
    x = random_tokens(seq_len=50)
    full, prefix = model(x).logits, model(x[:, :37]).logits
    torch.testing.assert_close(full[:, :37], prefix, rtol=1e-5, atol=1e-5)
    if variant in EXACT:
        baseline = tiny_model("baseline")
        model.load_state_dict(baseline.state_dict())
        torch.testing.assert_close(model(x).logits, baseline(x).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("padded", [False, True], ids=["causal", "causal+padding"])
def test_baseline_core_matches_transformers_eager(padded: bool) -> None:
    """`baseline` builds its causal mask itself when none is given (so whole-model compilation needs no mask
    builder); with transformers' boolean mask it honours padding too. Outputs and gradients equal GPT-2's own
    `eager_attention_forward` under the equivalent additive mask."""
    from transformers.models.gpt2.modeling_gpt2 import eager_attention_forward

    from attnlib.variants.baseline import eager_causal_attention

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 16, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    module = torch.nn.Module().eval()
    allowed = torch.ones(16, 16, dtype=torch.bool).tril().expand(2, 1, 16, 16).clone()
    if padded:
        allowed[1, :, :, :5] = False  # the second sequence's first five tokens are padding
        allowed[1, :, :5, 0] = True  # rows with nothing left still attend somewhere (as transformers does)
    ours, _ = eager_causal_attention(module, q, k, v, allowed if padded else None, scaling=8**-0.5)
    additive = torch.zeros(allowed.shape, dtype=torch.float64).masked_fill(~allowed, torch.finfo(torch.float64).min)
    ref, _ = eager_attention_forward(module, q, k, v, additive, scaling=8**-0.5)
    torch.testing.assert_close(ours, ref)
    grads = torch.autograd.grad(ours.sum(), (q, k, v))
    for g, g_ref in zip(grads, torch.autograd.grad(ref.sum(), (q, k, v))):
        torch.testing.assert_close(g, g_ref)


@pytest.mark.parametrize("name", [n for n in GPT2_VARIANTS if attnlib.VARIANTS[n].exact
                                  and attnlib.VARIANTS[n].attention_function and n != "baseline"])
def test_exact_cores_match_baseline_gradients(name: str) -> None:
    """Gradients of the whole model, not only logits: each exact kernel core against materialised attention."""
    baseline, model = tiny_model("baseline").train(False), tiny_model(name)
    model.load_state_dict(baseline.state_dict())
    x = random_tokens()
    for m in (baseline, model):
        m.zero_grad()
        m(x, labels=x).loss.backward()
    for (n, p), p_ref in zip(model.named_parameters(), baseline.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name} {n}: {m}")


def test_lsh_recompute_gives_the_same_gradients_and_keeps_o_t_d_memory() -> None:
    """`recompute=True`: the same outputs and gradients, and what the layer keeps for backward per token is the
    same at every T and a fraction of the sorted chunks' (O(T x D), not O(T x n_hashes x chunk_size))."""

    def run(recompute: bool, batch: int, seq_len: int) -> tuple[torch.Tensor, list[torch.Tensor], float]:
        torch.manual_seed(0)
        model = attnlib.build_model("lsh", seq_len=seq_len, n_layer=1, n_positions=seq_len, n_embd=64, n_head=2,
                                    chunk_size=16, recompute=recompute)
        attention = model.transformer.h[0].attn
        x = torch.randn(batch, seq_len, 64, generator=torch.Generator().manual_seed(1), requires_grad=True)
        saved: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = attention(x)[0]
        y.square().sum().backward()
        return y, [x.grad, *(p.grad for p in attention.parameters())], sum(saved.values()) / (batch * seq_len)

    y, grads, kept = run(False, 2, 96)
    y_r, grads_r, kept_r = run(True, 2, 96)
    torch.testing.assert_close(y_r, y)
    for g_r, g in zip(grads_r, grads):
        torch.testing.assert_close(g_r, g)
    assert kept_r < kept / 3
    assert run(True, 1, 192)[2] == pytest.approx(kept_r)  # per token, the same at twice the length


def test_a_prefill_into_a_longer_cache_is_a_square_causal_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """A static cache's prefill: 5 queries over 12 keys, no mask. The pinned cores give SDPA a square causal call
    (its FA2 backend runs no other causal one on the GPU) with the same result as causality from the first key over
    all 12 keys, whatever the later slots hold."""
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 5, 8), torch.randn(2, 4, 12, 8), torch.randn(2, 4, 12, 8)
    top_left = torch.ones(5, 12, dtype=torch.bool).tril()
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=top_left).transpose(1, 2)
    calls = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention",
                        lambda q, k, v, **kw: calls.append((q.shape[-2], k.shape[-2], kw["is_causal"])) or sdpa(q, k, v, **kw))
    for name in ("flash", "cudnn"):
        out, _ = attnlib.VARIANTS[name].attention_function(torch.nn.Module(), q, k, v, None)
        torch.testing.assert_close(out, expected)
    assert calls == [(5, 5, True)] * 2

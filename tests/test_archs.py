"""The model-family axis: the llama family at Llama-3.2-1B's shape, each variant on it checked against an exact
reference (causality, token mixing, outputs and gradients), and variants without a form there saying why."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaForCausalLM

import attnlib
from attnlib.archs import ARCHS, get_arch
from conftest import LLAMA_TINY as TINY, tiny_llama

EXACT = ["baseline", "sdpa", "flash", "cudnn", "flex"]


def test_the_llama_family_has_llama_3_2_1b_shape() -> None:
    with torch.device("meta"):
        model = attnlib.build_model("sdpa", arch="llama", seq_len=2048)
    c = model.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim) == (16, 2048, 32, 8, 64)
    assert (c.intermediate_size, c.vocab_size, c.tie_word_embeddings, c.hidden_act) == (8192, 128_256, True, "silu")
    assert c.rope_parameters["rope_type"] == "llama3" and c.rope_parameters["rope_theta"] == 500_000.0
    assert sum(p.numel() for p in model.parameters()) == 1_235_814_400
    assert c.attnlib_arch == "llama" and c._attn_implementation == "attnlib_sdpa"
    assert set(ARCHS) == {"gpt2", "llama"} and attnlib.build_model("sdpa", n_layer=1).config.attnlib_arch == "gpt2"
    with pytest.raises(ValueError, match="valid names: gpt2, llama"):
        get_arch("mamba")


@pytest.mark.parametrize("variant", EXACT)
@pytest.mark.parametrize("kv_heads", [4, 2, 1], ids=["MHA", "GQA", "MQA"])
def test_exact_kernels_give_llamas_own_logits_and_gradients(variant: str, kv_heads: int) -> None:
    """The same weights under transformers' own sdpa attention and under the variant: equal logits, equal
    gradients of every parameter."""
    assert_transformers_own_llama(tiny_llama(variant, num_key_value_heads=kv_heads))


def assert_transformers_own_llama(ours: LlamaForCausalLM) -> None:
    """`ours` and transformers' `LlamaForCausalLM` with its own sdpa attention on the same weights: equal logits,
    equal gradients of every parameter."""
    theirs = LlamaForCausalLM(ours.config.__class__(**{**ours.config.to_dict(), "_attn_implementation": "sdpa"}))
    theirs.load_state_dict(ours.state_dict())
    theirs.set_attn_implementation("sdpa")
    ids = torch.randint(0, 101, (2, 32), generator=torch.Generator().manual_seed(1))
    out_ours, out_theirs = ours(ids, labels=ids), theirs(ids, labels=ids)
    torch.testing.assert_close(out_ours.logits, out_theirs.logits, atol=2e-5, rtol=1e-4)
    out_ours.loss.backward()
    out_theirs.loss.backward()
    for (name, a), (_, b) in zip(ours.named_parameters(), theirs.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=2e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("variant, kv_heads", [("mha", 4), ("mqa", 1)])
def test_the_key_value_head_axis_is_llamas_own_attention(variant: str, kv_heads: int) -> None:
    """mha and mqa are Llama's own attention with one key/value head per query head or one in all: transformers'
    logits and gradients on the same weights; at 1B, 1.336B and 1.206B parameters beside the native 1.236B."""
    ours = tiny_llama(variant, num_key_value_heads={"mha": None, "mqa": 1}[variant])
    assert ours.config.num_key_value_heads == kv_heads
    with pytest.raises(ValueError, match="num_key_value_heads: .* got 2"):
        tiny_llama(variant, num_key_value_heads=2)
    assert_transformers_own_llama(ours)
    with torch.device("meta"):
        full = attnlib.build_model(variant, arch="llama", seq_len=2048)
    expected = {"mha": 1_336_477_696, "mqa": 1_206_454_272}[variant]  # 16 layers x 2 x 2048 x 64 x (kv - 8) apart
    assert sum(p.numel() for p in full.parameters()) == expected == 1_235_814_400 + 16 * 2 * 2048 * 64 * (
        full.config.num_key_value_heads - 8)
    with pytest.raises(NotImplementedError, match=f"{variant} on gpt2: .*gqa"):
        attnlib.build_model(variant)


@pytest.mark.parametrize("variant", ["sdpa", "sliding_window", "linear", "mla"])
def test_llama_variants_are_causal_and_mix_tokens(variant: str) -> None:
    model = tiny_llama(variant, **({"window": 8} if variant == "sliding_window" else
                                   {"chunk_size": 8} if variant == "linear" else {})).eval()
    ids = torch.randint(0, 101, (1, 32), generator=torch.Generator().manual_seed(2))
    changed = ids.clone()
    changed[0, 20:] = (changed[0, 20:] + 1) % 101
    with torch.no_grad():
        a, b = model(ids).logits, model(changed).logits
    torch.testing.assert_close(a[:, :20], b[:, :20])  # the future never reaches the past
    assert not torch.allclose(a[:, 20:], b[:, 20:])  # and what changed reaches the tokens after it
    early = ids.clone()
    early[0, 0] = (early[0, 0] + 1) % 101
    with torch.no_grad():
        assert not torch.allclose(model(early).logits[:, 5], a[:, 5])  # token 0 reaches token 5 through attention


def test_sliding_window_on_llama_uses_the_familys_window_and_equals_a_banded_reference() -> None:
    assert attnlib.build_model("sliding_window", arch="llama", seq_len=32, **TINY).config.window == 1024
    model = tiny_llama("sliding_window", window=8).eval()
    ids = torch.randint(0, 101, (1, 32), generator=torch.Generator().manual_seed(3))
    band = torch.ones(32, 32, dtype=torch.bool).tril() & ~torch.ones(32, 32, dtype=torch.bool).tril(-8)
    reference = LlamaForCausalLM(model.config.__class__(**{**model.config.to_dict(), "_attn_implementation": "sdpa"}))
    reference.load_state_dict(model.state_dict())
    reference.set_attn_implementation("sdpa")
    with torch.no_grad():  # transformers' sdpa honours an explicit [B, 1, T, T] mask as given
        expected = reference(ids, attention_mask=band[None, None]).logits
        torch.testing.assert_close(model(ids).logits, expected, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("variant", ["gqa", "lsh"])
def test_variants_without_a_llama_form_say_why(variant: str) -> None:
    with pytest.raises(NotImplementedError, match=f"{variant} on llama: "):
        attnlib.build_model(variant, arch="llama", **TINY)


def test_llama_config_errors_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="num_key_value_heads"):
        attnlib.build_model("sdpa", arch="llama", **{**TINY, "num_key_value_heads": 3})
    with pytest.raises(ValueError, match="n_kv_head"):
        attnlib.build_model("sdpa", arch="llama", n_kv_head=2)
    with pytest.raises(ValueError, match="seq_len"):
        attnlib.build_model("sdpa", arch="llama", seq_len=10**6)


def test_llamas_maskless_forward_is_its_own_forward() -> None:
    """The family's `causal_hidden_states` (no mask built) and its head give LlamaForCausalLM's logits."""
    from attnlib.archs import arch_of

    model = tiny_llama("sdpa").eval()
    ids = torch.randint(0, 101, (2, 32), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        hidden = arch_of(model.config).causal_hidden_states(model, ids)
        torch.testing.assert_close(model.lm_head(hidden), model(ids).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["eager", pytest.param("compile", marks=pytest.mark.slow)])
def test_the_trainer_trains_a_llama_and_its_results_say_so(tmp_path, mode: str) -> None:
    """The training engine on the llama family: its loss is transformers' loss of the same batch, and a trials job's
    results record the family."""
    from attnlib.data import prepare_data
    from attnlib.experiments.training import TrainConfig, Trainer
    from attnlib.experiments.trials import TrialsConfig, run_trials_job

    small = {**TINY, "vocab_size": 128_256}  # the family's own tokens: Llama 3's
    train = TrainConfig(variant="sdpa", arch="llama", mode=mode, model=small, seq_len=32, batch_size=2,
                        dataset="python-docs", max_documents=100)
    data = prepare_data(train.dataset, train.seq_len, tmp_path / "cache", train.max_documents, "llama3")
    assert data.info.tokenizer_name == "llama3" and data.info.eot_id == 128_001
    trainer = Trainer(train, data, torch.device("cpu"), total_steps=10)
    ids, labels = data.train_ids[:2], data.train_labels[:2]
    torch.testing.assert_close(trainer._loss(ids, labels), trainer.model(ids, labels=labels).loss, atol=1e-5, rtol=1e-5)
    assert trainer.step().isfinite() and trainer.describe()["params"] == sum(p.numel() for p in trainer.model.parameters())
    if mode == "eager":
        config = TrialsConfig(train=train, modes=["eager"], rounds=2, window_s=0.1, unmeasured_steps=1, idle_s=0.1)
        results = run_trials_job(config, tmp_path / "raw", tmp_path / "cache", progress=False)
        assert {r.arch for r in results} == {"llama"} and all(r.status == "ok" for r in results)


def test_flops_of_the_1b_model_by_hand() -> None:
    """6 x P_matmul + 3.5 x 4 x T(T+1)/2 x (32 heads x 64) x 16 layers / T: the query heads' width, not the KV
    heads' (8), and not the residual width, though at 1B the two agree."""
    from attnlib.flops import training_flops_per_token

    with torch.device("meta"):
        model = attnlib.build_model("sdpa", arch="llama", seq_len=2048)
    layer = 2048 * 2048 + 2 * 2048 * 512 + 2048 * 2048 + 3 * 2048 * 8192  # q, k and v (8 heads of 64), o, SwiGLU
    p_matmul = 16 * layer + 128_256 * 2048  # the tied head is a matmul, the embedding lookup is not
    attention = 3.5 * 4 * 2048 * 2049 / 2 * (32 * 64) * 16 / 2048
    count = training_flops_per_token(model, 2048)
    assert count.matmul_parameters == p_matmul == 1_235_746_816
    assert count.attention_flops_per_token == attention and count.training_flops_per_token == 6 * p_matmul + attention
    with torch.device("meta"):
        narrow = attnlib.build_model("sdpa", arch="llama", seq_len=2048, head_dim=32, num_key_value_heads=1)
    assert training_flops_per_token(narrow, 2048).attention_flops_per_token == attention / 2  # heads x head_dim


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_activation_checkpointing_gives_the_same_loss_and_gradients(tmp_path, arch: str) -> None:
    """Recomputing each layer in backward changes memory, not maths (dropout masks included: GPT-2's are replayed)."""
    from attnlib.data import prepare_data
    from attnlib.experiments.training import TrainConfig, Trainer

    model = {**TINY, "vocab_size": 50_257} if arch == "llama" else dict(n_layer=2, n_embd=32, n_head=2, n_positions=32)
    data = prepare_data("python-docs", 32, tmp_path, 100)
    grads = []
    for checkpointing in (False, True):
        train = TrainConfig(variant="sdpa", arch=arch, model=model, seq_len=32, batch_size=2, dataset="python-docs",
                            max_documents=100, activation_checkpointing=checkpointing)
        trainer = Trainer(train, data, torch.device("cpu"), total_steps=10)
        torch.manual_seed(7)
        loss = trainer._loss(data.train_ids[:2], data.train_labels[:2])
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in trainer.model.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b)


def test_mla_on_llama_is_deepseek_v2s_form_against_an_explicit_reference() -> None:
    """Queries from a latent, keys and values from another, a RoPE part per query head and one RoPE key shared by
    the heads, exact softmax: the module against the same maths written out in float64, outputs and gradients."""
    from attnlib.variants.mla import RopeLatentAttention, rotate_half

    model = tiny_llama("mla", kv_lora_rank=16, q_lora_rank=24, qk_rope_head_dim=8)
    attn = model.model.layers[0].self_attn
    assert isinstance(attn, RopeLatentAttention)
    x = torch.randn(2, 12, 64, requires_grad=True, generator=torch.Generator().manual_seed(6))
    out = attn(x)[0]

    def reference(x: torch.Tensor) -> torch.Tensor:
        a = attn.double()
        x = x.double()
        H, D, R, T = 4, 16, 8, x.shape[1]
        q = a.q_up(a.q_norm(a.q_down(x))).view(2, T, H, D + R).transpose(1, 2)
        latent, k_rope = a.kv_down(x).split([16, R], -1)
        kv = a.kv_up(a.kv_norm(latent)).view(2, T, H, 2 * D).transpose(1, 2)
        cos, sin = (t.unsqueeze(1).double() for t in a.rotary(x, torch.arange(T).unsqueeze(0)))
        q_rope = q[..., D:] * cos + rotate_half(q[..., D:]) * sin
        k_rope = (k_rope.unsqueeze(1) * cos + rotate_half(k_rope.unsqueeze(1)) * sin).expand(2, H, T, R)
        scores = (q[..., :D] @ kv[..., :D].transpose(-1, -2) + q_rope @ k_rope.transpose(-1, -2)) / (D + R) ** 0.5
        scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
        y = scores.softmax(-1) @ kv[..., D:]
        return a.o_proj(y.transpose(1, 2).reshape(2, T, H * D))

    expected = reference(x)
    attn.float()
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-4)
    grad = torch.randn_like(out)
    (g_ours,) = torch.autograd.grad(out, x, grad)
    (g_ref,) = torch.autograd.grad(reference(x), x, grad.double())
    torch.testing.assert_close(g_ours.double(), g_ref.double(), atol=1e-5, rtol=1e-4)


def test_mla_on_the_1b_model_has_native_attentions_size_and_its_own_flops() -> None:
    from attnlib.flops import training_flops_per_token

    with torch.device("meta"):
        mla = attnlib.build_model("mla", arch="llama", seq_len=2048)
        native = attnlib.build_model("sdpa", arch="llama", seq_len=2048)
    ratio = attnlib.attention_parameters(mla) / attnlib.attention_parameters(native)
    assert 0.9 <= ratio <= 1.1 and attnlib.attention_parameters(native) == 16 * 10_485_760
    area = 2048 * 2049 / 2  # queries and keys of 64 + 32 dims, values of 64, 32 heads, 16 layers
    assert training_flops_per_token(mla, 2048).attention_flops_per_token == 3.5 * 2 * area * 32 * (96 + 64) * 16 / 2048


def test_the_llama_profiles_plan_every_variant_with_a_llama_form() -> None:
    """The 1B study's training and long-context profiles: the exact kernels also eager (`extra_modes`), no job for
    a variant without a llama form, every cell on the llama family with sdpa's native 8 key/value heads as the
    reference."""
    from attnlib.experiments.longcontext import LongContextConfig
    from attnlib.experiments.trials import TrialsConfig
    from attnlib.pipeline import load_profile, plan

    training = load_profile("llama")
    jobs = {j.variant: TrialsConfig(**j.config) for j in plan(training, list(training.variants))}
    assert set(jobs) == set(attnlib.supported_variants("llama")) and not {"gqa", "lsh"} & set(jobs)
    assert {v for v, c in jobs.items() if "eager" in c.modes} == set(EXACT)
    assert all(c.modes[0] == "compile" and c.train.arch == "llama" and c.train.seq_len == 2048 for c in jobs.values())
    reference = attnlib.build_config("sdpa", arch="llama", seq_len=2048)
    assert reference.num_key_value_heads == 8 and jobs["mha"].reference == "sdpa"
    long = load_profile("llama-longcontext")
    cells = {j.variant: LongContextConfig(**j.config).paired_cells() for j in plan(long, list(long.variants))}
    every = [(t, "compile") for t in (2048, 8192, 32768, 65536)]
    assert {v for v, c in cells.items() if c == every} == {"sdpa", "sliding_window", "linear"}  # the budget's cut
    assert cells["mla"] == every[2:]
    assert all(c == every[3:] for v, c in cells.items() if v not in {"sdpa", "sliding_window", "linear", "mla"})
    config = LongContextConfig(**plan(long, ["mla"])[0].config)
    assert config.seq_lens == []
    assert config.cell_config(65536, "compile").activation_checkpointing and config.batch_size(65536) == 1
    with pytest.raises(ValueError, match="lsh has no form on llama"):
        long.train_config("lsh")

"""Distributed paths on CPU, gloo, several processes: each context-parallel form's output and gradients at a rank's
positions equal single-device attention's, and DDP's gradients equal one process's over the whole batch.

Each worker computes the single-device reference itself (same seed on every rank) and asserts; a failed
assertion in any rank fails the spawn, hence the test."""

from __future__ import annotations

import datetime

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from attnlib import build_model
from attnlib.experiments.training import causal_lm_loss
from attnlib.model import causal_hidden_states
from attnlib.parallel import (Shard, allgather_attention, carried_state_linear_attention, context_parallel_form,
                              halo_sliding_window_attention, install_context_parallel)
from attnlib.variants.flex import flex_masked
from attnlib.variants.linear import feature_map, naive_linear_attention
from attnlib.variants.sliding_window import sliding_window_mask_mod

B, H, D = 2, 4, 8


def _init(rank: int, world: int, init_file: str) -> None:
    torch.set_num_threads(1)
    # a collective that some rank never joins fails after 5 minutes, not CI's 90
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(minutes=5))


def _check_form(shard: Shard, seq_len: int, kv_heads: int, form, reference) -> None:
    """`form` on this rank's shard against `reference` on the whole sequence: outputs and q, k, v gradients."""
    generator = torch.Generator().manual_seed(seq_len * 7 + kv_heads)
    q = torch.randn(B, H, seq_len, D, generator=generator, dtype=torch.float64)
    k, v = (torch.randn(B, kv_heads, seq_len, D, generator=generator, dtype=torch.float64) for _ in range(2))
    weight = torch.randn(B, H, seq_len, D, generator=generator, dtype=torch.float64)  # a loss that mixes outputs
    full = [t.clone().requires_grad_() for t in (q, k, v)]
    expected = reference(*full)
    (expected * weight).sum().backward()
    local = [shard.take(t).detach().requires_grad_() for t in (q, k, v)]
    out = form(*local, shard)
    (out * shard.take(weight)).sum().backward()
    torch.testing.assert_close(out, shard.take(expected.detach()), rtol=1e-9, atol=1e-9)
    for name, mine, whole in zip("qkv", local, full):
        torch.testing.assert_close(mine.grad, shard.take(whole.grad), rtol=1e-9, atol=1e-9, msg=f"grad {name}")


def _forms_worker(rank: int, world: int, init_file: str) -> None:
    _init(rank, world, init_file)
    causal = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)  # noqa: E731
    for layout in ("zigzag", "contiguous"):
        for kv_heads in (H, 2):  # 2: GQA
            _check_form(Shard(rank, world, layout), 12 * world, kv_heads, allgather_attention, causal)
    window, chunk = 5, 4
    band = lambda q, k, v: flex_masked(q, k, v, None, sliding_window_mask_mod(window)).transpose(1, 2)  # noqa: E731
    _check_form(Shard(rank, world), 6 * world, H,
                lambda q, k, v, s: halo_sliding_window_attention(q, k, v, s, window), band)
    linear = lambda q, k, v: naive_linear_attention(feature_map(q), feature_map(k), v)  # noqa: E731
    for local_len in (8, 10):  # 10: each shard ends in a partial chunk
        _check_form(Shard(rank, world), local_len * world, H,
                    lambda q, k, v, s: carried_state_linear_attention(q, k, v, s, chunk), linear)
    for variant, params in (("sdpa", {}), ("gqa", {"n_kv_head": 2}), ("mla", {"kv_lora_rank": 8}),
                            ("sliding_window", {"window": 5}), ("linear", {"chunk_size": 4})):
        _check_layer(rank, world, variant, params)
    dist.destroy_process_group()


def _check_layer(rank: int, world: int, variant: str, params: dict) -> None:
    """GPT-2's attention layer with the distributed core installed, on this rank's tokens, against the layer on
    the whole sequence: outputs, and the weights' gradients summed over the ranks."""
    torch.manual_seed(0)
    model = build_model(variant, n_layer=1, n_embd=32, n_head=4, n_positions=64, **params).double().eval()
    whole = model.transformer.h[0].attn
    hidden = torch.randn(2, 12 * world, 32, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    expected = whole(hidden)[0]
    distributed = build_model(variant, n_layer=1, n_embd=32, n_head=4, n_positions=64, **params).double().eval()
    distributed.load_state_dict(model.state_dict())
    attention = distributed.transformer.h[0].attn
    name = install_context_parallel(attention, distributed.config, rank, world)
    shard = attention.context_parallel[1]
    out = attention(shard.take(hidden, 1))[0]
    torch.testing.assert_close(out, shard.take(expected, 1), msg=name)
    weight = torch.randn(expected.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    (expected * weight).sum().backward()
    (out * shard.take(weight, 1)).sum().backward()
    for (param_name, whole_param), mine in zip(whole.named_parameters(), attention.parameters()):
        grad = mine.grad.clone()
        dist.all_reduce(grad)  # each rank holds its own tokens' share of the weights' gradient
        torch.testing.assert_close(grad, whole_param.grad, msg=f"{name}: {param_name}")


@pytest.mark.parametrize("world", [2, pytest.param(3, marks=pytest.mark.slow)])  # 3 ranks: an uneven split, ~20 s
def test_context_parallel_forms_equal_single_device_attention(world, tmp_path) -> None:
    mp.spawn(_forms_worker, args=(world, str(tmp_path / "init")), nprocs=world)


class _LanguageModelLoss(torch.nn.Module):
    """Model and loss as one module: DDP arms its gradient all-reduce in its own forward, so the loss must be
    computed there (calling the wrapped module directly would train without any synchronisation)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return causal_lm_loss(causal_hidden_states(self.model, ids), ids, self.model.lm_head)


def _ddp_worker(rank: int, world: int, init_file: str, variants: list[str]) -> None:
    _init(rank, world, init_file)
    for variant in variants:
        torch.manual_seed(0)
        model = build_model(variant, n_layer=2, n_embd=32, n_head=4, n_positions=16, vocab_size=64,
                            resid_pdrop=0.0, embd_pdrop=0.0).double()
        ids = torch.randint(0, 64, (2 * world, 16), generator=torch.Generator().manual_seed(1))
        _LanguageModelLoss(model)(ids).backward()  # one process, the whole batch
        expected = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        model.zero_grad(set_to_none=True)
        ddp = torch.nn.parallel.DistributedDataParallel(_LanguageModelLoss(model))  # alive through backward: its
        ddp(ids.chunk(world)[rank]).backward()  # reducer's hooks go with it
        assert set(expected) == {name for name, p in model.named_parameters() if p.grad is not None}, variant
        for name, p in model.named_parameters():
            if name in expected:
                torch.testing.assert_close(p.grad, expected[name], rtol=1e-9, atol=1e-12, msg=lambda m: f"{variant} {name}: {m}")
        # DDP's reducer holds the process group: freed only after destroy_process_group, it would tear the group
        # down holding the GIL that gloo's worker thread waits for (a deadlock at exit, seen once in CI)
        del ddp
    dist.destroy_process_group()


def test_ddp_gradients_equal_one_process_over_the_whole_batch(tmp_path) -> None:
    """Every variant trains under DDP: its averaged gradients over two ranks' halves of the batch are the
    single-process gradients of the whole batch (equal halves, mean loss)."""
    variants = ["sdpa", "gqa", "mla", "sliding_window", "linear", "lsh"]
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), variants), nprocs=2)


def test_shard_layouts_cover_the_sequence_once_and_refuse_bad_splits() -> None:
    for layout in ("contiguous", "zigzag"):
        positions = torch.cat([Shard(r, 3, layout).positions(24) for r in range(3)])
        assert sorted(positions.tolist()) == list(range(24))
    assert Shard(0, 2, "zigzag").positions(8).tolist() == [0, 1, 6, 7]  # chunks 0 and 3 of 4
    with pytest.raises(ValueError, match="seq_len: 10 does not split into 4"):
        Shard(0, 2, "zigzag").chunks(10)
    with pytest.raises(ValueError, match="layout"):
        Shard(0, 2, "ring")
    with pytest.raises(ValueError, match="rank, world"):
        Shard(2, 2)


def test_every_variant_has_a_form_or_a_reason() -> None:
    from attnlib import supported_variants
    from attnlib.model import build_config

    for variant in supported_variants("gpt2"):
        config = build_config(variant, n_positions=64)
        try:
            form = context_parallel_form(variant, config)
        except NotImplementedError as error:
            assert variant == "lsh" and str(error).startswith(variant)
            continue
        assert (callable(form.core) or variant == "mla") and form.layout in ("contiguous", "zigzag")


def _ranks_worker(rank: int, world: int, init_file: str) -> None:
    from test_measure import RecordedGPU, busy

    from attnlib.measurement.ranks import measure_ranks

    _init(rank, world, init_file)
    with measure_ranks("aligned", tokens=10 * (rank + 1), gpus=RecordedGPU(power_w=100.0 * (rank + 1)),
                       codecarbon=False) as window:
        busy(0.3 * (rank + 1))  # rank 1 works twice as long; rank 0's card waits (and draws power) meanwhile
    ranks, total = window.ranks, window.total
    assert [r.tokens for r in ranks] == [10, 20] and total.tokens == 30 and total.gpu_count == 2
    # both ends aligned to the slowest rank, within the barriers' release skew (milliseconds on a loaded host)
    assert all(r.wall_s >= 0.6 - 0.02 for r in ranks), [r.wall_s for r in ranks]
    assert total.wall_s == max(r.wall_s for r in ranks)
    assert total.gpu_energy_j == pytest.approx(sum(r.gpu_energy_j for r in ranks))
    assert total.gpu_energy_j == pytest.approx(300.0 * total.wall_s, rel=0.3)  # 100 W + 200 W over the window
    assert total.gpu_j_per_token == pytest.approx(total.gpu_energy_j / 30)
    dist.destroy_process_group()


def test_a_window_across_ranks_is_aligned_and_sums_the_cards(tmp_path) -> None:
    mp.spawn(_ranks_worker, args=(2, str(tmp_path / "init")), nprocs=2)


def test_a_figure_one_rank_could_not_measure_is_none_for_the_job() -> None:
    from attnlib.measurement import Measurement
    from attnlib.measurement.ranks import sum_over_ranks

    measured = Measurement("w", wall_s=2.0, tokens=100, gpu_count=1, gpu_energy_j=400.0, torch_peak_mem_bytes=5)
    blind = Measurement("w", wall_s=2.1, tokens=100, gpu_count=1, torch_peak_mem_bytes=7,
                        reasons={"gpu_energy_j": "energy counter did not advance during the window"})
    total = sum_over_ranks([measured, blind])
    assert total.gpu_energy_j is None and total.gpu_j_per_token is None
    assert total.reasons["gpu_energy_j"] == "rank 1: energy counter did not advance during the window"
    assert (total.tokens, total.wall_s, total.torch_peak_mem_bytes) == (200, 2.1, 7)
    assert sum_over_ranks([measured, measured]).gpu_j_per_token == pytest.approx(4.0)

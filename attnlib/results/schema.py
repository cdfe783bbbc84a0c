"""One dataclass per result kind, versioned. Every field name is the quantity's one name: the loader's DataFrame
columns, the report's aggregates (`<name>_mean`, `<name>_ci95`, `<name>_cv`) and the paper's macros follow it.

Each result embeds what produced it (`Provenance`), the resolved job config, the data (`DataInfo`), the model and
its FLOP count (`ModelInfo`) and, where something was measured, the window (`Measurement`). Kinds to come
(inference, component) subclass `Result` the same way and register in `RESULT_KINDS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..data import DataInfo
from ..measurement.steady import SteadyState
from ..measurement.window import Measurement

# 3: paired training windows (`TrialResult.role`, `round`, `steady_state`) and the card's state per window
# (`Measurement.temperature_*`, `sm_clock_mean_mhz`, `clock_event_shares`); version 2 files are read as version 3
# (`attnlib.results.store.upgrade`), never rewritten
SCHEMA_VERSION = 3
ROLES = ("reference", "variant")
STATUSES = ("ok", "oom", "nan", "unsupported", "error")


@dataclass(kw_only=True)
class Provenance:
    """Who and what produced a result (`attnlib.provenance.provenance()`)."""

    attnlib_commit: str | None
    versions: dict[str, str | None]  # distribution -> version, None when not installed
    python: str
    device: str  # "cpu" or the GPU's name
    device_uuid: str | None  # NVML's card UUID: each result is divided by its own card's calibration
    created: str  # UTC, ISO 8601


@dataclass(kw_only=True)
class ModelInfo:
    """What ran: parameter counts, the attention kernel and FLOPs per trained token (`attnlib.flops`); an
    inference result has no optimiser and no training FLOPs (None)."""

    params: int
    attention_params: int
    kernel: str
    exact: bool
    optimizer: str | None = None
    training_flops_per_token: float | None = None


@dataclass(kw_only=True)
class Result:
    """Fields every result kind has. `status` is one of STATUSES; a failure is a result too, with its `error`."""

    kind: ClassVar[str] = ""
    variant: str
    mode: str
    arch: str = "gpt2"  # the model family (`attnlib.archs`); results written before it existed are GPT-2's
    status: str = "ok"
    error: str | None = None
    provenance: Provenance
    config: dict[str, Any]  # the job's resolved config, as the notebook received it
    data: DataInfo | None = None
    model: ModelInfo | None = None
    measurement: Measurement | None = None
    job_wall_s: float | None = None  # the part of the job that produced this result, setup included
    schema_version: int = SCHEMA_VERSION


@dataclass(kw_only=True)
class PairedWindow:
    """What a window of a pair carries (`attnlib.experiments._paired`): each round measures one window of the
    variant and one of the `reference` on the same card in the same process, in an order drawn from the result's
    `order_seed`; `role` says which this window is, and `variant` names the job's variant in both (the A/A control
    is the reference's own job: a second build against the first). `steady_state` is how the pair reached it before
    its first round. `alone_*` is the variant's memory with its trainer alone on the card, after its warm-up (the
    windows' own memory figures include the other trainer's). `role` None: an unpaired window."""

    role: str | None = None  # one of ROLES; None: an unpaired window
    reference: str | None = None  # the reference's variant name
    steady_state: SteadyState | None = None
    alone_torch_peak_mem_bytes: int | None = None  # the allocator's peak over the warm-up steps
    alone_gpu_mem_used_bytes: int | None = None  # device memory in use after them (NVML): context, cache, graph pools

    def __post_init__(self) -> None:
        if self.role not in (None, *ROLES):
            raise ValueError(f"role: one of {', '.join(ROLES)} or None, got {self.role!r}")


@dataclass(kw_only=True)
class TrialResult(PairedWindow, Result):
    """One measured window of training steps after an unmeasured warm-up (`attnlib.experiments.trials`): paired
    (schema 3, `PairedWindow`), its `round` the replicate; unpaired (schema 2, `role` None), `round` its place among
    the row's consecutive windows of one trainer."""

    kind: ClassVar[str] = "trial"
    round: int
    order_seed: int  # the seed of the round orders this window's position came from
    steps: int | None = None
    final_train_loss: float | None = None
    first_step_s: float | None = None  # compilation lands here
    warmup_s: float | None = None


@dataclass(kw_only=True)
class QualityResult(Result):
    """Training from scratch on a fixed token budget, validation loss along the way (`attnlib.experiments.quality`).
    The window covers training and the evaluations; the curve's energy, training alone."""

    kind: ClassVar[str] = "quality"
    seed: int
    steps: int | None = None
    val_loss: float | None = None
    # tokens, train_loss, val_loss, and gpu_j: the GPU energy of training up to that point (J, gross; the
    # evaluations' own energy left out; None without a counter, absent in results written before it existed)
    loss_curve: list[dict[str, float | None]] = field(default_factory=list)


@dataclass(kw_only=True)
class SweepResult(PairedWindow, Result):
    """One measured window of training steps at one sequence length, `batch_size` sequences of `seq_len` tokens
    per step (`attnlib.experiments.longcontext`): a fast-mode cell's windows are paired with the reference at the
    same length (`PairedWindow`, `trial` the round), an eager cell's are unpaired rounds over the lengths."""

    kind: ClassVar[str] = "sweep"
    seq_len: int
    batch_size: int
    trial: int
    order_seed: int
    steps: int | None = None
    first_step_s: float | None = None  # compilation and autotuning land here


@dataclass(kw_only=True)
class LayerResult(Result):
    """One measured window of repeated calls of one attention layer alone (input projections, core, output
    projection) on `batch_size` x `seq_len` tokens: `layer_pass` is "forward" or "forward_backward"
    (`attnlib.experiments.longcontext`). The window's `flops` are mask-exact (`attnlib.flops.layer_flops`)."""

    kind: ClassVar[str] = "layer"
    seq_len: int
    batch_size: int
    layer_pass: str
    trial: int
    order_seed: int
    calls: int | None = None
    flops_per_call: float | None = None


@dataclass(kw_only=True)
class InferenceResult(PairedWindow, Result):
    """One measured window of repeated prefills, decodes or whole generations (`attnlib.experiments.inference`);
    a paired cell's windows carry their `role` beside the reference's (`PairedWindow`, `trial` the round).

    `phase` "prefill": `batch_size` prompts of `context_len` tokens (tokens: the prompts'). "decode": `new_tokens`
    greedy steps after `context_len` tokens of context, the decoder rewound between repetitions (tokens: the
    generated ones). "generate": Hugging Face `generate` (prefill and decode, tokens: the generated ones). `mode`:
    "eager", "graph" (each decode step one CUDA graph replay), "hf_dynamic" or "hf_static" (generate's cache)."""

    kind: ClassVar[str] = "inference"
    phase: str
    batch_size: int
    context_len: int
    new_tokens: int
    trial: int
    order_seed: int
    repetitions: int | None = None  # prefills, decodes or generations in the window
    steps: int | None = None  # decode steps in the window (repetitions x new_tokens); None for a prefill
    cache_bytes: int | None = None  # the caches' buffers (all layers, all sequences, `max_len` positions)
    cache_allocated_bytes: int | None = None  # what building them took from the CUDA allocator; None on a CPU
    cache_bytes_per_token: int | None = None  # analytic, per sequence and token of context (0: constant state)
    step_bytes_read: float | None = None  # decode: the least bytes a step reads, mean over its steps
    first_call_s: float | None = None  # the first repetition, unmeasured: compilation lands here


@dataclass(kw_only=True)
class ComponentResult(Result):
    """One measured window of repeated calls of one component of a forward pass (`attnlib.components`), or of the
    whole pass (`component` "whole"), on inputs of its real shapes (`attnlib.experiments.components`). A pass calls
    the component `count` times; `flops_per_call` is matmul FLOPs (None: elementwise)."""

    kind: ClassVar[str] = "component"
    component: str
    phase: str  # "forward" (inference, CLEAR's setting) or "training" (each component forward + backward, the step)
    seq_len: int
    batch_size: int
    n_head: int
    n_embd: int
    setting: str  # "base", or the sensitivity axis this model varies ("batch_size", "n_head", "n_embd")
    trial: int
    order_seed: int
    count: int | None = None
    calls: int | None = None
    flops_per_call: float | None = None


@dataclass(kw_only=True)
class DistributedResult(Result):
    """One measured window of work spread over `world_size` ranks, one card each (`attnlib.experiments.distributed`).

    `strategy` "ddp": training steps under DistributedDataParallel, `batch_size` sequences of `seq_len` per rank and
    step. "context_parallel": the attention layer alone on `batch_size` sequences of `seq_len` tokens split across
    the ranks (`attnlib.parallel`), `layer_pass` "forward" or "forward_backward". `measurement` is the job's: every
    card's energy summed over a window aligned across ranks (`attnlib.measurement.ranks`); `ranks` holds each rank's
    own figures (its `Measurement` without the power trace), in rank order."""

    kind: ClassVar[str] = "distributed"
    strategy: str
    world_size: int
    seq_len: int
    batch_size: int
    layer_pass: str | None
    trial: int
    order_seed: int
    form: str | None = None  # context_parallel: the distributed core (`attnlib.parallel`) and its layout
    steps: int | None = None  # ddp: optimiser steps in the window
    calls: int | None = None  # context_parallel: layer calls in the window
    comm_share: float | None = None  # rank 0's share of step time in collectives, profiled after the window
    comm_share_source: str | None = None
    ranks: list[dict[str, Any]] = field(default_factory=list)


@dataclass(kw_only=True)
class RecallResult(Result):
    """One MQAR run (`attnlib.experiments.recall`): `steps` optimiser steps from fresh weights on the cell's
    sequences of `seq_len` tokens with `kv_pairs` key-value pairs, in one window (its energy: the run's), then the
    share of the test sequences' queries answered right."""

    kind: ClassVar[str] = "recall"
    seq_len: int
    kv_pairs: int
    seed: int
    steps: int | None = None
    train_loss: float | None = None  # the last step's
    accuracy: float | None = None


RESULT_KINDS: dict[str, type[Result]] = {cls.kind: cls for cls in (TrialResult, QualityResult, SweepResult,
                                                                   LayerResult, InferenceResult, ComponentResult,
                                                                   DistributedResult, RecallResult)}

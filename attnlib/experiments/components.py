"""Component-level energy (CLEAR, ../shared/seeds/002): each component of a forward pass (`attnlib.components`)
repeated alone in windows long enough for the energy counter to see it, beside the whole pass measured the same
way, so that the report can give each component's energy per call and the coverage (the components' energy,
counted as often as a pass calls them, over the whole pass's).

One process per variant. Settings (a phase, a model and a batch): the forward pass of the family's model
(`train.arch`: GPT-2 small, the 1B llama) at each of `seq_lens` with `batch_size(seq_len)` sequences; in the
`sensitivity_variant`'s job also the sensitivity axes at `sensitivity_seq_len` (other batch sizes, query head counts
at fixed width, widths); and for `training_variants` a training step at `training_seq_len`. Cells are (setting,
component), plus (setting, "whole"): the model's own forward pass (the family's `causal_hidden_states` and the
head), or its own training step (forward, loss,
backward, AdamW step, gradients zeroed in place so that the optimizer component always finds them). In each of
`trials` rounds the cells run in an order drawn afresh from the job's seed; a window repeats its call for at least
`window_s`. Forward: no autograd, bf16 weights on CUDA (fp32 on a CPU). Training: fp32 weights under bf16
autocast on CUDA, as the trainer. Eval mode (no dropout) in both.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..archs import dims_of, get_arch
from ..components import KINDS, TRAINING_KINDS, Component, components, training_components
from ..model import build_config, build_model
from ..registry import get_variant
from ..results import ComponentResult, Result
from ._job import WindowedJob
from .training import TrainConfig, causal_lm_loss, failure_status, frozen_gc

NOTEBOOK = "components.ipynb"
WHOLE = "whole"
SENSITIVITY_AXES = ("batch_size", "n_head", "n_embd")


@dataclass(frozen=True)
class Setting:
    """One phase, model and batch the components run on; `axis` names the sensitivity axis it varies ("base":
    none). `n_head` is the query heads and `n_embd` the residual width in any family (GPT-2's names)."""

    axis: str
    seq_len: int
    batch_size: int
    n_head: int
    n_embd: int
    phase: str = "forward"

    @property
    def name(self) -> str:
        return f"{self.phase}/{self.axis}/T{self.seq_len}/B{self.batch_size}/H{self.n_head}/C{self.n_embd}"

    @property
    def kinds(self) -> tuple[str, ...]:
        return (*(TRAINING_KINDS if self.phase == "training" else KINDS), WHOLE)


@dataclass
class ComponentsConfig:
    """One variant's components job; `train` gives the variant, its model parameters and the seed."""

    train: TrainConfig
    seq_lens: list[int] = field(default_factory=lambda: [512, 8192])
    tokens_per_call: int = 8192  # batch_size(T) = tokens_per_call // T, at least 1
    # variant -> the lengths of seq_lens its job leaves out to fit the GPU budget (the report says "cut" there); a
    # job keeps at least one
    cut_seq_lens: dict[str, list[int]] = field(default_factory=dict)
    sensitivity_variant: str | None = "sdpa"
    sensitivity_seq_len: int = 512
    sensitivity: dict[str, list[int]] = field(default_factory=lambda: {
        "batch_size": [1, 16, 64], "n_head": [6, 12, 24], "n_embd": [512, 768, 1024]})
    training_variants: list[str] = field(default_factory=lambda: ["sdpa", "gqa", "mla", "sliding_window", "linear"])
    training_seq_len: int = 512
    trials: int = 3
    window_s: float = 1.2  # >= 1 s and >= 10 updates of a ~10 Hz energy counter
    warmup_calls: int = 3
    idle_s: float = 2.0
    order_seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.train, dict):
            self.train = TrainConfig(**self.train)
        if not self.seq_lens or not all(isinstance(t, int) and t >= 1 for t in self.seq_lens) \
                or len(set(self.seq_lens)) != len(self.seq_lens):
            raise ValueError(f"seq_lens: distinct integers >= 1, at least one, got {self.seq_lens}")
        if set(self.sensitivity) - set(SENSITIVITY_AXES):
            raise ValueError(f"sensitivity: axes among {', '.join(SENSITIVITY_AXES)}, got {sorted(self.sensitivity)}")
        if min(self.tokens_per_call, self.trials, self.warmup_calls, self.sensitivity_seq_len) < 1:
            raise ValueError("tokens_per_call, trials, warmup_calls and sensitivity_seq_len must be >= 1, got "
                             f"{self.tokens_per_call}, {self.trials}, {self.warmup_calls}, {self.sensitivity_seq_len}")
        if self.window_s <= 0 or self.idle_s <= 0:
            raise ValueError(f"window_s and idle_s must be > 0, got {self.window_s}, {self.idle_s}")
        for variant in self.training_variants:
            get_variant(variant)
        for variant, cut in self.cut_seq_lens.items():
            get_variant(variant)  # an unknown name fails here
            if set(cut) - set(self.seq_lens) or not set(self.seq_lens) - set(cut):
                raise ValueError(f"cut_seq_lens: {variant!r} may leave out some of seq_lens {self.seq_lens}, not all; "
                                 f"got {cut}")
        for setting in self.settings():  # bad model parameters (a width the heads do not divide) fail here
            build_config(self.train.variant, arch=self.train.arch, **self.model_overrides(setting))

    def batch_size(self, seq_len: int) -> int:
        return max(1, self.tokens_per_call // seq_len)

    def settings(self) -> list[Setting]:
        """The base model at every length not cut for the job's variant, then (the sensitivity variant's job) one
        setting per axis value that differs from the base at `sensitivity_seq_len`: heads vary at fixed width, and
        a width keeps the head dimension (64 in GPT-2 small: 8 heads at 512, 16 at 1024)."""
        dims = dims_of(build_config(self.train.variant, arch=self.train.arch, **self.train.model))
        base = dict(n_head=dims.heads, n_embd=dims.width)
        cut = self.cut_seq_lens.get(self.train.variant, [])
        out = [Setting("base", t, self.batch_size(t), **base) for t in self.seq_lens if t not in cut]
        if self.train.variant == self.sensitivity_variant:
            t = self.sensitivity_seq_len
            reference = dict(batch_size=self.batch_size(t), **base)
            head_dim = dims.head_dim
            for axis, values in self.sensitivity.items():
                for v in values:
                    if v != reference[axis]:
                        varied = {**reference, axis: v} | ({"n_head": v // head_dim} if axis == "n_embd" else {})
                        out.append(Setting(axis, t, **varied))
        if self.train.variant in self.training_variants:
            t = self.training_seq_len
            out.append(Setting("base", t, self.batch_size(t), **base, phase="training"))
        return out

    def model_overrides(self, setting: Setting) -> dict[str, Any]:
        """The family's config fields of `setting`: its positions, query heads and width over `train.model`."""
        arch = get_arch(self.train.arch)
        return {**self.train.model, **arch.length_overrides(setting.seq_len),
                **arch.shape_overrides(setting.n_head, setting.n_embd)}

    def cells(self) -> dict[str, tuple[Setting, str]]:
        """Cell name -> (setting, component kind or "whole")."""
        return {f"{s.name}/{kind}": (s, kind) for s in self.settings() for kind in s.kinds}

    def result_name(self, cell: str, trial: int) -> str:
        setting, kind = self.cells()[cell]
        s = setting
        return (f"{self.train.variant}__component__{s.phase}__{s.axis}__T{s.seq_len}__B{s.batch_size}__H{s.n_head}"
                f"__C{s.n_embd}__{kind}__trial{trial}.json")

    def result_names(self) -> list[str]:
        return [self.result_name(cell, t) for cell in self.cells() for t in range(self.trials)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _Job(WindowedJob):
    """One components job: a model and its components per setting, built at the setting's first visit."""

    def __init__(self, config: ComponentsConfig, out_dir: Path):
        super().__init__(out_dir, config.idle_s)
        self.config = config
        self.dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self._built: dict[Setting, tuple[list[Component], Callable[[], Any]]] = {}

    def precision(self, setting: Setting):
        """Autocast to bf16 for a training setting on CUDA (the trainer's precision), nothing otherwise."""
        cuda = self.device.type == "cuda" and setting.phase == "training"
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda)

    def build(self, setting: Setting) -> tuple[list[Component], Callable[[], Any]]:
        """The setting's components and its whole pass or step, on seeded weights and random tokens."""
        if setting not in self._built:
            c = self.config
            torch.manual_seed(c.train.seed)
            training = setting.phase == "training"
            dtype = torch.float32 if training else self.dtype
            model = build_model(c.train.variant, arch=c.train.arch, **c.model_overrides(setting))
            model = model.to(self.device, dtype).eval()
            hidden_states = get_arch(c.train.arch).causal_hidden_states
            ids = torch.randint(model.config.vocab_size, (setting.batch_size, setting.seq_len),
                                generator=torch.Generator().manual_seed(c.train.seed)).to(self.device)
            if not training:
                whole = lambda: model.lm_head(hidden_states(model, ids))  # noqa: E731  the model's own pass
                self._built[setting] = (components(model, ids), whole)
                return self._built[setting]
            # lr 0: the same work, weights unchanged, so every cell of the setting sees the same model
            optimizer = torch.optim.AdamW(model.parameters(), lr=0.0, betas=(0.9, 0.95), fused=self.device.type == "cuda")

            def whole() -> None:  # the trainer's step: its forward and loss under autocast, backward, AdamW
                with self.precision(setting):
                    loss = causal_lm_loss(hidden_states(model, ids), ids, model.lm_head)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=False)

            with self.precision(setting):
                self._built[setting] = (training_components(model, ids, optimizer), whole)
        return self._built[setting]

    def _common(self, cell: str) -> dict[str, Any]:
        """The `ComponentResult` fields every window of `cell` shares."""
        c = self.config
        setting, kind = c.cells()[cell]
        return dict(variant=c.train.variant, arch=c.train.arch, mode="eager", component=kind, phase=setting.phase,
                    seq_len=setting.seq_len, batch_size=setting.batch_size, n_head=setting.n_head,
                    n_embd=setting.n_embd, setting=setting.axis, provenance=self.origin, config=c.to_dict(),
                    order_seed=c.order_seed)

    def visit(self, cell: str, trials: list[int]) -> list[Result]:
        c = self.config
        setting, kind = c.cells()[cell]
        common = self._common(cell)
        results, start = [], time.perf_counter()
        try:
            parts, whole = self.build(setting)
            part = next((p for p in parts if p.kind == kind), None)
            call, count, flops = (part.run, part.count, part.flops) if part else (whole, 1, None)
            with torch.set_grad_enabled(setting.phase == "training"), self.precision(setting):
                for _ in range(c.warmup_calls):
                    call()
                with frozen_gc():
                    for trial in trials:
                        with self.window(f"{c.train.variant}/{cell}/trial{trial}") as window:
                            calls, window_start = 0, time.perf_counter()
                            while calls == 0 or time.perf_counter() - window_start < c.window_s:
                                call()
                                calls += 1
                            window.add_work(tokens=calls * setting.batch_size * setting.seq_len,
                                            flops=calls * flops if flops else 0.0)
                        results.append(self.write(c.result_name(cell, trial), ComponentResult(
                            **common, trial=trial, measurement=window.result, count=count, calls=calls,
                            flops_per_call=flops, job_wall_s=time.perf_counter() - start)))
        except Exception as error:  # the cell's remaining trials record the failure; other cells go on
            status, text = failure_status(error), f"{type(error).__name__}: {str(error)[:2000]}"
            self.failed[cell] = (status, text)
            results += [self.failed_trial(cell, t) for t in trials[len(results):]]
        return results

    def failed_trial(self, cell: str, trial: int) -> Result:
        status, text = self.failed[cell]
        return self.write(self.config.result_name(cell, trial), ComponentResult(
            **self._common(cell), trial=trial, status=status, error=text, job_wall_s=0.0))

    def release(self) -> None:
        self._built.clear()


def run_components_job(config: ComponentsConfig, out_dir: Path, progress: bool = True) -> list[Result]:
    """Every cell of `config.train.variant`'s components grid, `config.trials` interleaved rounds; writes one JSON
    result per window (or per failed trial) into `out_dir`, keeping the windows it already holds (a resumed job)."""
    job = _Job(config, out_dir)
    return job.rounds(list(config.cells()), set(), config.trials, config.order_seed,
                      f"{config.train.variant} components", progress, result_name=config.result_name)

"""Inference: prefill and decode, each variant with its own cache (`attnlib.decode`), beside plain Hugging Face
`generate` as the anchor.

One process per variant, three kinds of cells (`InferenceResult`), each window a loop of repetitions:

- prefill: `batch_size` random prompts of `context_len` tokens through the variant's own core, filling its
  caches and keeping the last position's logits (what generation needs); eager. Tokens: the prompts'.
- decode: `new_tokens` greedy steps after an unmeasured prefill of `context_len` tokens; before each repetition
  the decoder is rewound to the end of the prefill (`Decoder.mark` / `rewind`), so a window holds decode alone.
  In `decode_mode` (default "cudagraph": each step one replay of a CUDA graph of the eager step) at every batch
  and context, and in other modes of `attnlib.decode.DECODE_MODES` at `other_decode_cells`. Tokens: the generated
  ones.
- generate (the sdpa job only, with `hf_anchor`): transformers' own model of the family (`GPT2LMHeadModel`,
  `LlamaForCausalLM`) `.generate` on the same weights, greedy, `new_tokens` tokens after a `context_len`-token
  prompt, with its dynamic and with its static cache.

With a `reference` (protocol v3), every prefill and decode cell is paired: the job also builds the reference's model
(the family's native attention; in the reference's own job, a second build of it: the A/A control), and each
round of a cell measures one window of the variant and one of the reference, back to back in an order drawn from
the job's seed, after `warm_s` seconds of the two alternating (the card's power and clocks settle under this cell's
own load). The report takes the per-round ratios, as for training.

The model is the job's family (`train.arch`: GPT-2 small by default, or the Llama-3.2-1B shape) in bf16 on CUDA
(fp32 on a CPU), its positions long enough for every cell. FLOPs
are mask-exact forward counts (`attnlib.flops.prefill_flops`, `decode_flops`); a decode also records the least
bytes a step must read (`attnlib.decode.step_bytes_read`), which the report divides by the card's measured
bandwidth for the step's memory floor. Interleaving as in the long-context family: in each of `trials` rounds
the cells run in an order drawn afresh from the job's seed; a compiled cell compiles once and runs all its
windows at its first visit. A cell that fails records each of its trials with the status and reason (lsh has no
cache: "unsupported").
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..archs import get_arch
from ..decode import DECODE_MODES, Decoder, cache_bytes_per_token, step_bytes_read
from ..flops import decode_flops, prefill_flops
from ..model import attention_parameters, build_config, build_model
from ..registry import get_variant
from ..measurement.trials import round_orders
from ..results import InferenceResult, ModelInfo, Result
from ..results.schema import ROLES
from ._job import WindowedJob
from .training import TrainConfig, failure_status, frozen_gc

NOTEBOOK = "inference.ipynb"
ANCHOR_VARIANT = "sdpa"  # the anchor's attention: transformers' own SDPA path
ANCHOR_MODES = ("hf_dynamic", "hf_static")
# modes that compile (transformers may compile generate's static-cache forward): such a cell compiles once and
# runs all its windows at its first visit; the others ("cudagraph" captures in milliseconds) are interleaved
COMPILED_MODES = ("compile", "graph", "hf_static")
EVERY_JOB = "*"  # a key of `cut_cells`: the cells it names are cut from every job


@dataclass
class InferenceConfig:
    """One variant's inference job; `train` gives the variant, its model parameters and the seed (its training
    fields are unused)."""

    train: TrainConfig
    prefill_lens: list[int] = field(default_factory=lambda: [512, 4096, 32768])
    prefill_batch_size: int = 16
    decode_batch_sizes: list[int] = field(default_factory=lambda: [1, 16, 64])
    decode_context_lens: list[int] = field(default_factory=lambda: [512, 4096])
    new_tokens: int = 256
    decode_mode: str = "cudagraph"
    # mode -> [batch, context] pairs measured in that mode too
    other_decode_cells: dict[str, list[list[int]]] = field(default_factory=lambda: {"eager": [[1, 512]]})
    hf_anchor: bool = True  # the sdpa job also measures transformers' generate, at the decode batches, first context
    reference: str | None = None  # pair every prefill and decode cell with this variant's (protocol v3); None: unpaired
    # variant -> the cells its job leaves out to fit the GPU budget: a cell name ("decode/cudagraph/B16/T2048") or
    # any leading part of one ("decode": every decode cell; "decode/cudagraph/B16": batch 16 at every context); the
    # report says "cut" there. The reference (the A/A control in every cell) is never cut alone, and no job is cut
    # whole; EVERY_JOB ("*") cuts a cell from the grid, every job's, the reference's included (a cell whose pair does
    # not fit on the card).
    cut_cells: dict[str, list[str]] = field(default_factory=dict)
    warm_s: float = 5.0  # a paired cell: the two works alternate this long before its first round
    trials: int = 3
    window_s: float = 2.0  # >= 2 s: >= 20 updates of the energy counter
    warmup_reps: int = 2  # unmeasured repetitions per visit (compilation and autotuning land in the first)
    idle_s: float = 2.0
    order_seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.train, dict):
            self.train = TrainConfig(**self.train)
        for name in ("prefill_lens", "decode_batch_sizes", "decode_context_lens"):
            values = getattr(self, name)
            if not values or not all(isinstance(v, int) and v >= 1 for v in values) or len(set(values)) != len(values):
                raise ValueError(f"{name}: distinct integers >= 1, at least one, got {values}")
        for mode in [self.decode_mode, *self.other_decode_cells]:
            if mode not in DECODE_MODES:
                raise ValueError(f"decode_mode, other_decode_cells: modes among {', '.join(DECODE_MODES)}, got {mode!r}")
        for cell in self._other_cells():
            if min(cell[1:]) < 1:
                raise ValueError(f"other_decode_cells: [batch, context] pairs of integers >= 1, got {list(cell[1:])}")
        if min(self.prefill_batch_size, self.new_tokens, self.trials, self.warmup_reps) < 1:
            raise ValueError("prefill_batch_size, new_tokens, trials and warmup_reps must be >= 1, got "
                             f"{self.prefill_batch_size}, {self.new_tokens}, {self.trials}, {self.warmup_reps}")
        if self.window_s <= 0 or self.idle_s <= 0 or self.warm_s < 0:
            raise ValueError(f"window_s and idle_s must be > 0 and warm_s >= 0, got {self.window_s}, {self.idle_s}, "
                             f"{self.warm_s}")
        for variant, cut in self.cut_cells.items():
            if variant != EVERY_JOB:
                get_variant(variant)  # an unknown name fails here
            grid = self._grid(self.train.variant if variant == EVERY_JOB else variant)
            unmatched = [c for c in cut if not any(is_cut(name, [c]) for name in grid)]
            whole = all(is_cut(name, variant_cut(self.cut_cells, variant)) for name in grid)
            if variant == self.reference or unmatched or whole:
                raise ValueError(f"cut_cells: {variant!r} may leave out some of its cells {list(grid)}, not all, and "
                                 f"the reference none of its own; each entry a cell or a leading part of one; got {cut}")
        build_config(self.train.variant, arch=self.train.arch, **self.model_overrides())  # bad parameters fail here
        if self.reference is not None:
            build_config(self.reference, arch=self.train.arch, **self.model_overrides(self.reference))

    def _other_cells(self) -> list[tuple[str, int, int]]:
        """(mode, batch, context) of `other_decode_cells`; a malformed pair is a ValueError."""
        try:
            return [(mode, int(b), int(t)) for mode, pairs in self.other_decode_cells.items() for b, t in pairs]
        except (TypeError, ValueError):
            raise ValueError(f"other_decode_cells: mode -> [batch, context] pairs, got {self.other_decode_cells}") from None

    @property
    def n_positions(self) -> int:
        """Positions the model needs: the longest prompt, or the longest context plus the new tokens."""
        contexts = self.decode_context_lens + [context for _, _, context in self._other_cells()]
        return max(max(self.prefill_lens), max(contexts) + self.new_tokens)

    def model_overrides(self, variant: str | None = None) -> dict[str, Any]:
        """The model's config fields for `variant` (default the job's): the job's model without the job variant's
        own parameters where another variant is built, positions for every cell."""
        own = set(get_variant(self.train.variant).params) if variant not in (None, self.train.variant) else set()
        return {**{k: v for k, v in self.train.model.items() if k not in own},
                **get_arch(self.train.arch).length_overrides(self.n_positions)}

    def paired(self, cell: str) -> bool:
        """Whether `cell` is measured beside the reference (prefill and decode cells, where there is one)."""
        return self.reference is not None and self.cells()[cell][0] != "generate"

    def roles(self, cell: str) -> tuple[str | None, ...]:
        """A paired cell's window roles per round, or (None,): an unpaired cell's one window."""
        return ROLES if self.paired(cell) else (None,)

    def cells(self) -> dict[str, tuple[str, str, int, int]]:
        """Cell name -> (phase, mode, batch_size, context_len) of this job, in a fixed order: the grid less the
        cells cut for its variant."""
        cut = variant_cut(self.cut_cells, self.train.variant)
        return {name: cell for name, cell in self._grid(self.train.variant).items() if not is_cut(name, cut)}

    def _grid(self, variant: str) -> dict[str, tuple[str, str, int, int]]:
        """Every cell of `variant`'s job before cuts."""
        out = {cell_name("prefill", "eager", self.prefill_batch_size, t): ("prefill", "eager", self.prefill_batch_size, t)
               for t in self.prefill_lens}
        decode = [(self.decode_mode, b, t) for t in self.decode_context_lens for b in self.decode_batch_sizes]
        decode += [cell for cell in self._other_cells() if cell[0] != self.decode_mode]
        out |= {cell_name("decode", m, b, t): ("decode", m, b, t) for m, b, t in decode}
        if self.hf_anchor and variant == ANCHOR_VARIANT:
            t = self.decode_context_lens[0]
            out |= {cell_name("generate", m, b, t): ("generate", m, b, t)
                    for m in ANCHOR_MODES for b in self.decode_batch_sizes}
        return out

    def result_name(self, cell: str, trial: int, role: str | None = None) -> str:
        """A window's file: a paired cell's round `trial` has one per role."""
        phase, mode, batch, context = self.cells()[cell]
        name = f"{self.train.variant}__inference__{phase}__{mode}__B{batch}__T{context}__trial{trial}"
        return f"{name}__{role}.json" if role else f"{name}.json"

    def result_names(self) -> list[str]:
        """The result files of the job (under raw/)."""
        return [self.result_name(cell, trial, role) for cell in self.cells() for trial in range(self.trials)
                for role in self.roles(cell)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def cell_name(phase: str, mode: str, batch: int, context: int) -> str:
    return f"{phase}/{mode}/B{batch}/T{context}"


def variant_cut(cut_cells: dict[str, list[str]], variant: str) -> list[str]:
    """What `InferenceConfig.cut_cells` leaves out of `variant`'s job: the grid's cuts and its own."""
    return [*cut_cells.get(EVERY_JOB, []), *(cut_cells.get(variant, []) if variant != EVERY_JOB else [])]


def is_cut(cell: str, cut: list[str]) -> bool:
    """Whether `cut` (one variant's `variant_cut`) names `cell` or a leading part of its name ("decode" cuts
    "decode/cudagraph/B1/T2048")."""
    return any(cell == c or cell.startswith(c.rstrip("/") + "/") for c in cut)


@dataclass
class _Work:
    """One cell's repeated unit of work, what one repetition does, and its fixed facts."""

    run: Callable[[], None]
    tokens: int  # per repetition
    flops: float  # per repetition
    steps: int  # decode steps per repetition (0: none)
    facts: dict[str, Any]  # InferenceResult fields of the cell (cache sizes, bytes per step)
    kernel: str | None = None  # what ran, where it is not the variant's own kernel


class _Job(WindowedJob):
    """One inference job: its model (built once, bf16 on CUDA) and its cells' failures."""

    def __init__(self, config: InferenceConfig, out_dir: Path):
        super().__init__(out_dir, config.idle_s)
        self.config = config
        self.dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.model, self.info = self._build(config.train.variant)
        # the reference's model (a second build where the job is the reference's own: the A/A control)
        self.reference = self._build(config.reference) if config.reference is not None else None
        self._prompts = torch.Generator(device="cpu").manual_seed(config.train.seed)

    def _build(self, variant: str) -> tuple[torch.nn.Module, ModelInfo]:
        """`variant`'s model of the job's family from the job's seed, in the job's dtype, in eval mode."""
        c = self.config
        torch.manual_seed(c.train.seed)
        model = build_model(variant, arch=c.train.arch, **c.model_overrides(variant)).to(self.device, self.dtype).eval()
        spec = get_variant(variant)
        return model, ModelInfo(params=sum(p.numel() for p in model.parameters()),
                                attention_params=attention_parameters(model), kernel=spec.kernel(self.device.type),
                                exact=spec.exact)

    def prompt(self, batch: int, length: int) -> torch.Tensor:
        vocab = self.model.config.vocab_size
        return torch.randint(vocab, (batch, length), generator=self._prompts).to(self.device)

    def work(self, phase: str, mode: str, batch: int, context: int, model: torch.nn.Module | None = None) -> _Work:
        """Build one cell's unit of work on `model` (default the job's: caches allocated, a decode's prompt
        prefilled, unmeasured)."""
        c, model = self.config, model if model is not None else self.model
        if phase == "generate":
            return self._anchor(mode, batch, context)
        before = torch.cuda.memory_allocated() if self.device.type == "cuda" else None
        new = c.new_tokens if phase == "decode" else 0
        decoder = Decoder(model, batch, context + new, mode=mode)
        facts = dict(cache_bytes=decoder.cache_bytes, cache_bytes_per_token=cache_bytes_per_token(model, self.dtype),
                     cache_allocated_bytes=None if before is None else torch.cuda.memory_allocated() - before)
        prompt = self.prompt(batch, context)
        if phase == "prefill":
            empty = decoder.mark()

            def run() -> None:
                decoder.rewind(empty)
                decoder.prefill(prompt, all_logits=False)

            return _Work(run, batch * context, prefill_flops(model, batch, context), 0, facts)
        first = decoder.prefill(prompt, all_logits=False)[:, -1].argmax(-1, keepdim=True)
        after_prompt = decoder.mark()

        def run() -> None:
            decoder.rewind(after_prompt)
            ids = first
            for _ in range(new):
                ids = decoder.step(ids).argmax(-1, keepdim=True)

        facts["step_bytes_read"] = sum(step_bytes_read(model, batch, context + i + 1, self.dtype)
                                       for i in range(new)) / new
        return _Work(run, batch * new, decode_flops(model, batch, context, new), new, facts)

    def _anchor(self, mode: str, batch: int, context: int) -> _Work:
        """transformers' own model of the family (its SDPA attention) on the job model's weights, greedy
        `generate`."""
        c = self.config
        config = copy.deepcopy(self.model.config)
        config._attn_implementation, config.use_cache = "sdpa", True
        hf = type(self.model)(config).to(self.device, self.dtype).eval()
        hf.load_state_dict(self.model.state_dict())  # strict: the same weights, or an error
        prompt = self.prompt(batch, context)
        mask = torch.ones_like(prompt)
        kwargs = dict(max_new_tokens=c.new_tokens, min_new_tokens=c.new_tokens, do_sample=False,
                      pad_token_id=0, attention_mask=mask)
        if mode == "hf_static":
            kwargs["cache_implementation"] = "static"

        def run() -> None:
            with torch.no_grad():
                hf.generate(prompt, **kwargs)

        flops = prefill_flops(self.model, batch, context) + decode_flops(self.model, batch, context, c.new_tokens - 1)
        return _Work(run, batch * c.new_tokens, flops, c.new_tokens, {},
                     f"transformers {type(hf).__name__}.generate, SDPA attention")

    def _warm(self, works: dict[str | None, _Work]) -> dict[str | None, float]:
        """The first repetition of each work (timed: compilation lands there), then `warmup_reps` - 1 more, then,
        for a pair, the two alternating for `warm_s`; returns each work's first repetition's seconds."""
        c = self.config
        first_call_s = {}
        for role, work in works.items():
            first = time.perf_counter()
            work.run()
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            first_call_s[role] = time.perf_counter() - first
            for _ in range(c.warmup_reps - 1):
                work.run()
        warm_until = time.perf_counter() + (c.warm_s if len(works) > 1 else 0.0)
        while time.perf_counter() < warm_until:
            for work in works.values():
                work.run()
        return first_call_s

    def _window(self, label: str, work: _Work) -> tuple[Any, int]:
        """One measured window: `work` repeated for at least `window_s`; (its measurement, the repetitions)."""
        with self.window(label) as window:
            reps, window_start = 0, time.perf_counter()
            while reps == 0 or time.perf_counter() - window_start < self.config.window_s:
                work.run()
                reps += 1
            window.add_work(tokens=reps * work.tokens, flops=reps * work.flops)
        return window.result, reps

    def visit(self, cell: str, trials: list[int]) -> list[InferenceResult]:
        """Measure `trials` rounds of one cell: build its work (and, for a paired cell, the reference's on the same
        prompts), warm them up (`_warm`), then each round measures one window of each, back to back in an order
        drawn from the job's seed, and writes both together; an unpaired cell's round is one window."""
        c = self.config
        phase, mode, batch, context = c.cells()[cell]
        roles = self.config.roles(cell)
        common = self._common(cell)
        results, start, works, infos = [], time.perf_counter(), {}, {}
        try:
            prompts = self._prompts.get_state()
            for role in roles:  # the same prompts for both
                self._prompts.set_state(prompts)
                model, info = self.reference if role == "reference" else (self.model, self.info)
                works[role] = self.work(phase, mode, batch, context, model)
                kernel = works[role].kernel
                infos[role] = info if kernel is None else dataclasses.replace(info, kernel=kernel)
            first_call_s = self._warm(works)
            orders = round_orders(list(roles), max(trials) + 1, c.order_seed + sum(map(ord, cell)))
            with frozen_gc():
                for trial in trials:
                    trial_start, written = time.perf_counter(), []
                    for role in orders[trial]:
                        work = works[role]
                        measurement, reps = self._window(f"{c.train.variant}/{cell}/trial{trial}/{role or ''}", work)
                        written.append((role, InferenceResult(
                            **common, **work.facts, trial=trial, role=role, model=infos[role],
                            measurement=measurement, repetitions=reps, steps=reps * work.steps or None,
                            first_call_s=first_call_s[role], job_wall_s=0.0)))
                    wall = time.perf_counter() - (start if trial == trials[0] else trial_start)
                    for role, result in written:  # a round's windows land together: a stop never splits them
                        results.append(self.write(c.result_name(cell, trial, role),
                                                  dataclasses.replace(result, job_wall_s=wall / len(written))))
        except Exception as error:  # the cell's remaining rounds record the failure; other cells go on
            status, text = failure_status(error), f"{type(error).__name__}: {str(error)[:2000]}"
            self.failed[cell] = (status, text)
            done = {r.trial for r in results}
            results += [self.write(c.result_name(cell, t, role), InferenceResult(
                **common, trial=t, role=role, status=status, error=text, job_wall_s=time.perf_counter() - start))
                for t in trials if t not in done for role in roles]
        finally:
            works.clear()
            if mode in COMPILED_MODES:  # what this cell compiled
                torch._dynamo.reset()
            self.free()
        return results

    def _common(self, cell: str) -> dict[str, Any]:
        """The `InferenceResult` fields every window of `cell` shares."""
        c = self.config
        phase, mode, batch, context = c.cells()[cell]
        return dict(variant=c.train.variant, mode=mode, arch=c.train.arch, phase=phase, batch_size=batch,
                    context_len=context, new_tokens=0 if phase == "prefill" else c.new_tokens,
                    provenance=self.origin, config=c.to_dict(), order_seed=c.order_seed,
                    reference=c.reference if c.paired(cell) else None)

    def failed_trial(self, cell: str, trial: int) -> InferenceResult:
        """A later round of a failed cell: the same status and reason, without running it again (a paired cell's
        reference window too, written beside it)."""
        status, text = self.failed[cell]
        return [self.write(self.config.result_name(cell, trial, role), InferenceResult(
            **self._common(cell), trial=trial, role=role, status=status, error=text, job_wall_s=0.0))
            for role in self.config.roles(cell)][0]


def run_inference_job(config: InferenceConfig, out_dir: Path, progress: bool = True) -> list[Result]:
    """Every cell of `config.train.variant`'s inference grid, `config.trials` interleaved rounds; writes one JSON
    result per window (or per failed trial) into `out_dir`, keeping the windows it already holds (a resumed job)."""
    job, cells = _Job(config, out_dir), config.cells()
    compiled = {cell for cell, (_, mode, _, _) in cells.items() if mode in COMPILED_MODES}

    def result_name(cell: str, trial: int) -> str:  # a paired round's two windows land together: one names both
        return config.result_name(cell, trial, config.roles(cell)[0])

    return job.rounds(list(cells), compiled, config.trials, config.order_seed, f"{config.train.variant} inference",
                      progress, result_name=result_name)

"""Several GPUs: data-parallel training and context-parallel attention, the energy of every card summed.

One torchrun job per variant, one card per rank (`launch` starts it; `main` is what each rank runs). A cell uses
the first `world_size` ranks, in its own process group, so that 1, 2 and 4 cards are measured in one job and in
interleaved rounds, like every other family; ranks outside a cell's group wait for the next cell, and their cards
are not in its window.

- "ddp": the training steps of `train` under DistributedDataParallel (`Trainer.data_parallel`), each rank
  `train.batch_size` sequences of `train.seq_len` per step, so the global batch grows with the ranks (weak scaling,
  as data parallelism is used). Scaling efficiency is the report's: tok/s on N cards over N x tok/s on one.
- "context_parallel": the attention layer alone (input projections, the variant's distributed core from
  `attnlib.parallel`, output projection), forward + backward, on `cp_batch_size` sequences of `seq_len` tokens
  split across the ranks, in the same form on one rank, so that scaling compares one code path. Mask-exact FLOPs
  (`attnlib.flops.layer_flops`).
- "ring_attention": the same layer and split with PyTorch's own ring attention (`context_parallel`, CUDA only) in
  place of attnlib's form, for the variants whose core it replaces (`attnlib.parallel.RING_VARIANTS`), after a check
  that its outputs and input gradient equal the layer's on one card.

Each window is `measure_ranks` (barrier-aligned ends, each rank its own card, the job's figures the sum); after it,
a few unmeasured steps under the PyTorch profiler give the share of step time spent in collectives. Every
rank runs the same number of steps or calls in a window (agreed from a timed warm-up before it), since each one
is a collective. A cell without a distributed form (lsh; gqa and mla, whose own modules bypass the attention
interface) records "unsupported" with the reason on every trial; rank 0 writes the results. A failure that
strikes one rank only (not all of a cell's ranks alike) leaves its peers waiting in a collective: torchrun's
timeout then ends the job, and its notebook records the error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

from ..flops import layer_flops
from ..measurement.ranks import measure_ranks
from ..model import attention_alone, build_model
from ..parallel import RING_VARIANTS, install_context_parallel, ring_attention, ring_attention_error
from ..results import DistributedResult, ModelInfo, Result, read_result
from ._job import WindowedJob
from .longcontext import layer_call
from .training import TrainConfig, Trainer, check_finite, failure_status, frozen_gc, require_gpt2

NOTEBOOK = "distributed.ipynb"
RING_TOLERANCE = 2e-2  # bf16: the ring merges partial softmaxes in another order than one kernel


@dataclass
class DistributedConfig:
    """One variant's distributed job on `gpus` cards. World sizes above `gpus` are left out of the grid."""

    train: TrainConfig
    gpus: int = 1  # ranks torchrun starts, one card each
    ddp_world_sizes: list[int] = field(default_factory=lambda: [1, 2, 4])
    cp_world_sizes: list[int] = field(default_factory=lambda: [1, 2, 4])
    cp_seq_lens: list[int] = field(default_factory=lambda: [65536, 131072])
    cp_batch_size: int = 1
    ring_world_sizes: list[int] = field(default_factory=list)  # PyTorch's ring form, for RING_VARIANTS only
    trials: int = 3
    window_s: float = 2.0  # >= 2 s: >= 20 updates of the energy counter
    warmup_steps: int = 2  # per cell visit, before the 3 timed steps whose fastest sets the window's step count
    profile_steps: int = 3  # after each window, unmeasured: the communication share of step time (torch.profiler)
    idle_s: float = 2.0
    order_seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.train, dict):
            self.train = TrainConfig(**self.train)
        require_gpt2(self.train, "distributed")
        for name in ("ddp_world_sizes", "cp_world_sizes", "cp_seq_lens", "ring_world_sizes"):
            values = getattr(self, name)
            if not all(isinstance(v, int) and v >= 1 for v in values) or len(set(values)) != len(values):
                raise ValueError(f"{name}: distinct integers >= 1, got {values}")
        for name in ("gpus", "cp_batch_size", "trials", "warmup_steps", "profile_steps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name}: an integer >= 1, got {getattr(self, name)!r}")
        if self.window_s <= 0 or self.idle_s <= 0:
            raise ValueError(f"window_s and idle_s must be > 0, got {self.window_s}, {self.idle_s}")
        if self.train.mode != "eager":
            raise ValueError(f"train.mode: data-parallel training runs in eager mode, got {self.train.mode!r}")
        for world, seq_len in ((w, t) for s, w, t in self.cells() if s != "ddp"):
            if seq_len % (2 * world):
                raise ValueError(f"cp_seq_lens: {seq_len} does not split into {2 * world} equal chunks for "
                                 f"{world} ranks")

    def cells(self) -> list[tuple[str, int, int]]:
        """(strategy, world_size, seq_len) of every cell this job measures."""
        ddp = [("ddp", w, self.train.seq_len) for w in self.ddp_world_sizes if w <= self.gpus]
        ring = self.ring_world_sizes if self.train.variant in RING_VARIANTS else []
        return ddp + [(s, w, t) for s, sizes in (("context_parallel", self.cp_world_sizes), ("ring_attention", ring))
                      for w in sizes if w <= self.gpus for t in self.cp_seq_lens]

    def result_names(self) -> list[str]:
        """The result files of the job (under raw/)."""
        return [f"{self.train.variant}__distributed__{s}__W{w}__T{t}__trial{i}.json"
                for s, w, t in self.cells() for i in range(self.trials)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _agreed_count(work: Callable[[], Any], window_s: float, group: Any, timed_calls: int = 3) -> int:
    """How many calls of `work` fill `window_s`, from the fastest of `timed_calls` synchronised calls (one slow
    call would shorten the window below `window_s`), the largest any rank of `group` asks for (each call is a
    collective, so every rank must run the same number)."""
    seconds = []
    for _ in range(timed_calls):
        _synchronize()
        begin = time.perf_counter()
        work()
        _synchronize()
        seconds.append(time.perf_counter() - begin)
    count = torch.tensor([max(1, math.ceil(window_s / max(min(seconds), 1e-9)))], dtype=torch.int64)
    if dist.is_initialized():
        dist.all_reduce(count, op=dist.ReduceOp.MAX, group=group)
    return int(count.item())


def communication_share(work: Callable[[], Any], repeats: int) -> tuple[float | None, str]:
    """The share of the time of `repeats` calls of `work` that went to collectives, from the PyTorch profiler, and
    how it was read: the device time of NCCL kernels on a GPU (overlapped with computation or not, as DDP overlaps
    its all-reduce with the backward pass), the time of gloo's collectives on a CPU."""
    from torch.profiler import ProfilerActivity, profile

    on_cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    with profile(activities=activities) as profiler:
        _synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            work()
        _synchronize()
        wall_us = (time.perf_counter() - start) * 1e6
    events = profiler.key_averages()
    if on_cuda:
        comm_us = sum(e.self_device_time_total for e in events if e.key.lower().startswith("nccl")
                      and "kernel" in e.key.lower())
        source = f"torch.profiler: NCCL kernels' device time over {repeats} calls"
    else:
        comm_us = sum(e.cpu_time_total for e in events if e.key.startswith("gloo:"))
        source = f"torch.profiler: gloo collectives' time over {repeats} calls"
    return (comm_us / wall_us if wall_us > 0 else None), source


def _synchronize() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class _Job(WindowedJob):
    """The state one rank carries: its process groups per world size, trainers per world size, failures."""

    def __init__(self, config: DistributedConfig, out_dir: Path, cache_dir: Path):
        super().__init__(out_dir, config.idle_s)  # the idle baseline is this rank's card's
        self.config, self.cache_dir = config, Path(cache_dir)
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        sizes = sorted({w for _, w, _ in config.cells()})
        # every rank creates every group, in the same order (new_group is collective)
        self.groups = {w: dist.new_group(list(range(w))) if dist.is_initialized() else None for w in sizes}
        self.cells = {f"{s}/W{w}/T{t}": (s, w, t) for s, w, t in config.cells()}
        self.trainers: dict[int, Trainer] = {}

    def write(self, name: str, result: Result) -> Result:
        return super().write(name, result) if self.rank == 0 else result

    def name(self, strategy: str, world: int, seq_len: int, trial: int) -> str:
        return f"{self.config.train.variant}__distributed__{strategy}__W{world}__T{seq_len}__trial{trial}.json"

    def common(self, strategy: str, world: int, seq_len: int, trial: int) -> dict[str, Any]:
        c = self.config
        return dict(variant=c.train.variant, mode="eager", provenance=self.origin, config=c.to_dict(),
                    strategy=strategy, world_size=world, seq_len=seq_len,
                    batch_size=c.train.batch_size if strategy == "ddp" else c.cp_batch_size,
                    layer_pass=None if strategy == "ddp" else "forward_backward", trial=trial,
                    order_seed=c.order_seed)

    def visit(self, cell: str, trials: list[int]) -> list[Result]:
        strategy, world, seq_len = self.cells[cell]
        if self.rank >= world:
            return []
        start = time.perf_counter()
        try:
            if strategy == "ddp":
                return [self.ddp_window(world, seq_len, trial, start) for trial in trials]
            return [self.cp_window(strategy, world, seq_len, trial, start) for trial in trials]
        except Exception as error:  # recorded for this cell's remaining trials; the next cells go on
            status, text = failure_status(error), f"{type(error).__name__}: {str(error)[:2000]}"
            self.failed[cell] = (status, text)
            return [self.failed_trial(cell, trial) for trial in trials]
        finally:
            self.free()

    def failed_trial(self, cell: str, trial: int) -> Result:
        strategy, world, seq_len = self.cells[cell]
        status, text = self.failed[cell]
        return self.write(self.name(strategy, world, seq_len, trial), DistributedResult(
            **self.common(strategy, world, seq_len, trial), status=status, error=text, job_wall_s=0.0))

    def release(self) -> None:
        self.trainers.clear()

    def window_on(self, label: str, world: int) -> measure_ranks:
        return measure_ranks(label, group=self.groups[world], idle=self.idle,
                             codecarbon=self.codecarbon if self.codecarbon.running else True)

    def ddp_window(self, world: int, seq_len: int, trial: int, start: float) -> DistributedResult:
        """One window of data-parallel training steps on `world` ranks (the trainer is built at the first visit
        and kept for the later rounds)."""
        c = self.config
        trainer = self.trainers.get(world)
        if trainer is None:
            if self.rank == 0:  # the tokenised cache is written once, then read by the other ranks
                c.train.token_data(self.cache_dir, seq_len)
            if dist.is_initialized():
                dist.barrier(group=self.groups[world])
            data = c.train.token_data(self.cache_dir, seq_len)
            trainer = Trainer(c.train, data, self.device, total_steps=10**6)
            if dist.is_initialized():
                trainer.data_parallel(self.groups[world])
            self.trainers[world] = trainer
        for _ in range(c.warmup_steps):
            check_finite(trainer.step(), "in the warm-up")
        steps = _agreed_count(trainer.step, c.window_s, self.groups[world])
        tokens_per_step = c.train.tokens_per_step
        with frozen_gc(), self.window_on(f"{c.train.variant}/ddp/W{world}/trial{trial}", world) as window:
            for _ in range(steps):
                loss = trainer.step()
            window.add_work(tokens=steps * tokens_per_step,
                            flops=steps * tokens_per_step * trainer.flops.training_flops_per_token)
        check_finite(loss, "at the end of the window")
        comm_share, comm_source = communication_share(trainer.step, c.profile_steps)  # after the window, unmeasured
        return self.write(self.name("ddp", world, seq_len, trial), DistributedResult(
            **self.common("ddp", world, seq_len, trial), data=trainer.data.info, model=ModelInfo(**trainer.describe()),
            measurement=window.total, ranks=[_without_trace(r) for r in window.ranks], steps=steps,
            comm_share=comm_share, comm_share_source=comm_source, job_wall_s=time.perf_counter() - start))

    def cp_window(self, strategy: str, world: int, seq_len: int, trial: int, start: float) -> DistributedResult:
        """One window of forward + backward calls of the attention layer on one `seq_len` sequence split over
        `world` ranks (each rank calls it on its own tokens), in attnlib's form ("context_parallel") or PyTorch's
        ring ("ring_attention")."""
        c, variant = self.config, self.config.train.variant
        torch.manual_seed(c.train.seed)
        model = build_model(variant, seq_len=seq_len, **{**c.train.model, "n_layer": 1, "n_positions": seq_len})
        attention, config = model.transformer.h[0].attn.train().to(self.device), model.config
        flops_per_call = layer_flops(attention, config, seq_len, c.cp_batch_size, backward=True)  # whole sequence
        group = self.groups[world]
        if strategy == "ring_attention":
            error = ring_attention_error(attention, config.n_embd, group, self.device)
            if not error <= RING_TOLERANCE:
                raise RuntimeError(f"ring attention differs from one card by {error:.2e} (> {RING_TOLERANCE})")
            form = f"ring (PyTorch context_parallel, head-tail; {error:.1e} from one card)"
            hidden = torch.randn(c.cp_batch_size, seq_len, config.n_embd, device=self.device, dtype=torch.bfloat16)
            sharded = ring_attention([hidden], group)  # hidden becomes this rank's tokens
        else:
            # the distributed form on one rank too, so that scaling compares one code path on 1 and N cards
            # (linear's form is attnlib's chunked PyTorch core, not fla's kernel; the exact form splits the causal
            # work in two)
            form = install_context_parallel(attention, config, self.rank, world, group)
            hidden, sharded = None, contextlib.nullcontext()
        with sharded:  # the ring's forward and backward both run inside its context
            call = layer_call(attention_alone(model), c.cp_batch_size, seq_len // world, config.n_embd, self.device,
                              backward=True, hidden=hidden)
            for _ in range(c.warmup_steps):
                call()
            calls = _agreed_count(call, c.window_s, group)
            with frozen_gc(), self.window_on(f"{variant}/{strategy}/W{world}/T{seq_len}/trial{trial}", world) as window:
                for _ in range(calls):
                    call()
                window.add_work(tokens=calls * c.cp_batch_size * seq_len // world,
                                flops=calls * flops_per_call / world)
            comm_share, comm_source = communication_share(call, c.profile_steps)  # after the window, unmeasured
        return self.write(self.name(strategy, world, seq_len, trial), DistributedResult(
            **self.common(strategy, world, seq_len, trial), measurement=window.total,
            ranks=[_without_trace(r) for r in window.ranks], calls=calls, form=form, comm_share=comm_share,
            comm_share_source=comm_source, job_wall_s=time.perf_counter() - start))


def _without_trace(measurement: Any) -> dict[str, Any]:
    """A rank's figures as kept beside the job's total (its power trace is in no table, and the bulk of the bytes)."""
    return {k: v for k, v in dataclasses.asdict(measurement).items() if k != "power_trace"}


def run_distributed_job(config: DistributedConfig, out_dir: Path, cache_dir: Path,
                        progress: bool = True) -> list[Result]:
    """This rank's part of the job (under torchrun, or alone as one rank): `config.trials` interleaved rounds over
    the cells; rank 0 writes one JSON result per window (or per failed trial) into `out_dir`, and every rank keeps
    the windows it finds there (a resumed job; rank 0 writes a cell's results after its ranks' last barrier)."""
    job = _Job(config, out_dir, cache_dir)
    return job.rounds(list(job.cells), set(), config.trials, config.order_seed,
                      f"{config.train.variant} distributed", progress and job.rank == 0,
                      result_name=lambda cell, trial: job.name(*job.cells[cell], trial))


def launch(config: DistributedConfig, out_dir: Path, cache_dir: Path) -> list[Result]:
    """Run the job on `config.gpus` ranks through torchrun (`python -m torch.distributed.run --standalone`), each
    rank `main` below, and return the results it wrote; `RuntimeError` with the ranks' last output if it failed."""
    out_dir, cache_dir = Path(out_dir), Path(cache_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config_path = out_dir / f".{config.train.variant}__distributed__config.json"
    config_path.write_text(json.dumps(config.to_dict()))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={config.gpus}",
               "-m", "attnlib.experiments.distributed", str(config_path), str(out_dir), str(cache_dir)]
    done = subprocess.run(command, capture_output=True, text=True)
    config_path.unlink(missing_ok=True)
    if done.returncode != 0:
        raise RuntimeError(f"torchrun exited with {done.returncode}:\n{(done.stdout + done.stderr)[-4000:]}")
    return [read_result(out_dir / name) for name in config.result_names() if (out_dir / name).exists()]


def main(argv: list[str]) -> None:
    """One rank of a torchrun job: `python -m attnlib.experiments.distributed CONFIG_JSON OUT_DIR CACHE_DIR`."""
    config = DistributedConfig(**json.loads(Path(argv[0]).read_text()))
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    # NCCL for the cards' tensors, gloo for the host's (the agreed step counts, the gathered figures)
    dist.init_process_group("cuda:nccl,cpu:gloo" if torch.cuda.is_available() else "gloo")
    try:
        run_distributed_job(config, Path(argv[1]), Path(argv[2]))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])

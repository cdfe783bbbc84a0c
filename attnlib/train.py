"""Training GPT-2 with one attention variant, measured: trials (throughput and energy) and quality runs.

Every variant gets the same seed, data order and hyper-parameters: bf16 autocast on CUDA (fp32 on CPU), AdamW
(fused on CUDA), linear warm-up then cosine decay, gradient clipping, gradient accumulation. Compilation and
warm-up steps run before the measured window and are timed separately.

- `run_trial`: warm up, then one `attnlib.measure` window of at least `window_s` seconds of training steps.
- `run_quality`: train from scratch on a fixed token budget, validation loss at fixed token counts (a loss
  curve), the whole run inside one window (its total energy against its final loss).
Each writes one self-describing JSON result, atomically; failures (out of memory, NaN, unsupported kernel) are
results too, with their status.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import IGNORE_INDEX, TokenData, prepare_data
from .flops import training_flops_per_token
from .measurement import measure, measure_idle
from .measurement.nvml import gpu_uuid
from .model import attention_parameters, build_model
from .registry import get_variant

SCHEMA = "attnlib.result/1"
STATUSES = ("ok", "oom", "nan", "unsupported", "error")


@dataclass
class TrainConfig:
    """One training setup. `model` holds `build_model` overrides (GPT2Config fields and variant parameters)."""

    variant: str = "sdpa"
    mode: str = "eager"  # "eager" or "compile" (torch.compile of each transformer block)
    model: dict[str, Any] = field(default_factory=dict)
    dataset: str = "auto"
    max_documents: int | None = None
    seq_len: int = 512
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 6e-4
    min_lr: float = 6e-5
    warmup_steps: int = 100  # learning-rate warm-up
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 1234
    # measurement
    idle_s: float = 3.0  # idle baseline, CUDA context alive, at the start of each process
    unmeasured_steps: int = 5  # compile, autotuning, allocator growth: before the window
    window_s: float = 10.0
    # quality run
    quality_tokens: int = 0
    eval_every_tokens: int = 0
    eval_batches: int = 8

    def __post_init__(self) -> None:
        get_variant(self.variant)  # ValueError listing the names
        if self.mode not in ("eager", "compile"):
            raise ValueError(f"mode: must be 'eager' or 'compile', got {self.mode!r}")
        for name in ("seq_len", "batch_size", "grad_accum", "eval_batches"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name}: must be an integer >= 1, got {getattr(self, name)!r}")
        if self.window_s <= 0 or self.lr <= 0:
            raise ValueError(f"window_s and lr must be > 0, got {self.window_s}, {self.lr}")

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.grad_accum * self.seq_len


class Trainer:
    """Model, optimiser, schedule and a deterministic batch stream for one `TrainConfig`."""

    def __init__(self, config: TrainConfig, data: TokenData, device: torch.device, total_steps: int):
        self.config, self.data, self.device = config, data, device
        torch.manual_seed(config.seed)
        self.model = build_model(config.variant, seq_len=config.seq_len, **config.model).to(device).train()
        self.flops = training_flops_per_token(self.model, config.seq_len)
        fused = device.type == "cuda"
        self.optimizer = torch.optim.AdamW(self._param_groups(), lr=config.lr, betas=(0.9, 0.95), fused=fused)
        self.optimizer_name = f"AdamW ({'fused' if fused else 'foreach'})"
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor(total_steps))
        self.head_loss = causal_lm_loss
        if config.mode == "compile":
            # Regional compilation: each transformer block and the head + loss, not GPT2Model.forward.
            # transformers builds the causal mask with data-dependent checks that, traced, always yield a dense
            # mask (no causal kernel path, and pinned kernels refuse it); built eagerly it stays None for plain
            # causal attention. The blocks are identical and share one compiled graph; the head + loss graph
            # fuses the 50257-way logits with the cross-entropy.
            for block in self.model.transformer.h:
                block.compile()
            self.head_loss = torch.compile(causal_lm_loss)
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
        self._batches = self._batch_stream()

    def _param_groups(self) -> list[dict]:
        """Weight decay on matrices and embeddings (2-D), none on biases and norm gains (nanoGPT's split)."""
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.dim() < 2]
        return [{"params": decay, "weight_decay": self.config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    def _lr_factor(self, total_steps: int):
        c = self.config

        def factor(step: int) -> float:
            if step < c.warmup_steps:
                return (step + 1) / c.warmup_steps
            progress = min(1.0, (step - c.warmup_steps) / max(1, total_steps - c.warmup_steps))
            return (c.min_lr + 0.5 * (c.lr - c.min_lr) * (1 + math.cos(math.pi * progress))) / c.lr

        return factor

    def _batch_stream(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Blocks in a seeded random order, reshuffled each epoch by (seed, epoch): the same for every variant."""
        n, b = len(self.data.train_ids), self.config.batch_size
        if n < b:
            raise ValueError(f"batch_size: {b} is more than the {n} training blocks of the dataset")
        epoch = 0
        while True:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.config.seed + epoch))
            for start in range(0, n - b + 1, b):
                idx = order[start:start + b]
                yield (self.data.train_ids[idx].to(self.device, non_blocking=True),
                       self.data.train_labels[idx].to(self.device, non_blocking=True))
            epoch += 1

    def step(self) -> torch.Tensor:
        """One optimiser step over `grad_accum` micro-batches; returns the (device) loss, unsynchronised."""
        total = torch.zeros((), device=self.device)
        for _ in range(self.config.grad_accum):
            ids, labels = next(self._batches)
            with self.autocast:
                loss = self.loss(ids, labels) / self.config.grad_accum
            loss.backward()
            total += loss.detach()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()
        return total

    def loss(self, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean next-token loss of a batch; the same computation in both modes (compiled or not)."""
        hidden = self.model.transformer(ids).last_hidden_state
        return self.head_loss(hidden, labels, self.model.lm_head)

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean validation loss over the first `eval_batches` validation blocks (the same for every variant)."""
        self.model.eval()
        ids, labels = self.data.val_ids, self.data.val_labels
        losses = []
        for start in range(0, min(len(ids), self.config.eval_batches * self.config.batch_size), self.config.batch_size):
            batch = slice(start, start + self.config.batch_size)
            with self.autocast:
                loss = self.loss(ids[batch].to(self.device), labels[batch].to(self.device))
            losses.append(loss.float().item())
        self.model.train()
        return sum(losses) / len(losses)


def causal_lm_loss(hidden: torch.Tensor, labels: torch.Tensor, lm_head: torch.nn.Module) -> torch.Tensor:
    """Next-token cross-entropy from the last hidden states `[B, T, C]`, labels `[B, T]` (-100 ignored): the
    logits of the last position predict nothing, so they are not computed. Same maths as transformers' loss."""
    logits = lm_head(hidden[:, :-1]).float()
    return F.cross_entropy(logits.flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _check_finite(loss: torch.Tensor, where: str) -> float:
    value = loss.float().item()
    if not math.isfinite(value):
        raise FloatingPointError(f"loss is {value} {where}")
    return value


def _status(error: BaseException) -> str:
    if isinstance(error, torch.OutOfMemoryError):
        return "oom"
    if isinstance(error, FloatingPointError):
        return "nan"
    if isinstance(error, NotImplementedError) or "No available kernel" in str(error):
        return "unsupported"
    return "error"


def write_json_atomic(path: Path, obj: dict) -> None:
    """Write to a temporary file and rename: a killed run never leaves a half-written result."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    tmp.replace(path)


def result_skeleton(kind: str, config: TrainConfig, **fields: Any) -> dict:
    return {
        "schema": SCHEMA, "kind": kind, "variant": config.variant, "mode": config.mode, "status": "ok",
        "error": None, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": dataclasses.asdict(config), **fields,
    }


def _run(kind: str, config: TrainConfig, out_path: Path, cache_dir: Path, body, **fields: Any) -> dict:
    """Common frame of trials and quality runs: data, idle baseline, trainer, failure recording, JSON."""
    result = result_skeleton(kind, config, **fields)
    device = default_device()
    result["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    # which card: the report divides by that card's calibration
    result["device_uuid"] = gpu_uuid(device) if device.type == "cuda" else None
    start = time.perf_counter()
    try:
        data = prepare_data(config.dataset, config.seq_len, cache_dir, config.max_documents)
        result["data"] = data.info
        idle = measure_idle(config.idle_s) if device.type == "cuda" else None
        result["idle"] = None if idle is None else dataclasses.asdict(idle)
        result["timing"] = {"setup_s": time.perf_counter() - start}
        body(result, config, data, device)
    except Exception as error:  # every failure becomes a recorded status; the pipeline goes on
        result["status"], result["error"] = _status(error), f"{type(error).__name__}: {str(error)[:2000]}"
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    result["wall_s"] = time.perf_counter() - start
    write_json_atomic(out_path, result)
    return result


def _describe_model(trainer: Trainer) -> dict:
    spec = get_variant(trainer.config.variant)
    return {
        "params": sum(p.numel() for p in trainer.model.parameters()),
        "attention_params": attention_parameters(trainer.model),
        "kernel": spec.kernel(trainer.device.type), "exact": spec.exact, "optimizer": trainer.optimizer_name,
        "flops": trainer.flops.to_dict(),
    }


def _show(bar: tqdm, window: measure, loss: float, tokens: int, **extra: str) -> None:
    """Progress-bar postfix: loss, tokens/s so far and, on a GPU, the power now."""
    power = window.power_now_w
    tokens_per_s = tokens / max(bar.format_dict["elapsed"], 1e-9)
    bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens_per_s:,.0f}", **({"W": f"{power:.0f}"} if power else {}), **extra)


def run_trial(config: TrainConfig, trial: int, out_path: Path, cache_dir: Path, progress: bool = True) -> dict:
    """Warm up, then one measured window of at least `config.window_s` seconds. Returns and writes the result."""

    def body(result: dict, config: TrainConfig, data: TokenData, device: torch.device) -> None:
        trainer = Trainer(config, data, device, total_steps=10**6)
        result["model"] = _describe_model(trainer)
        warm_start = time.perf_counter()
        loss = trainer.step()
        _check_finite(loss, "at the first step")
        result["timing"]["first_step_s"] = time.perf_counter() - warm_start  # compilation lands here (.item syncs)
        for _ in range(config.unmeasured_steps - 1):
            loss = trainer.step()
        _check_finite(loss, "during warm-up")  # synchronises
        result["timing"]["warmup_s"] = time.perf_counter() - warm_start
        with measure(f"{config.variant}/{config.mode}/trial{trial}", keep_trace=trial == 0) as window:
            bar = tqdm(desc=f"{config.variant} {config.mode} trial {trial}", unit="step", disable=not progress)
            steps, start = 0, time.perf_counter()
            # steps until window_s has passed on the host; the window's exit synchronises, so the GPU's window
            # (which the energy covers) is never shorter than window_s, whatever the steps cost on this card
            while time.perf_counter() - start < config.window_s:
                loss = trainer.step()
                steps += 1
                if progress and steps % 10 == 0:  # no bar, no bookkeeping in the measured loop
                    bar.update(10)
                    _show(bar, window, loss.item(), steps * config.tokens_per_step)
            bar.close()
            tokens = steps * config.tokens_per_step
            window.add_work(tokens=tokens, flops=tokens * trainer.flops.training_flops_per_token)
        result["measurement"] = window.result.to_dict()
        result["steps"] = steps
        result["final_train_loss"] = _check_finite(loss, "at the end of the window")
        if window.result.status != "ok":
            raise RuntimeError(window.result.error)

    return _run("trial", config, out_path, cache_dir, body, trial=trial)


def run_quality(config: TrainConfig, out_path: Path, cache_dir: Path, progress: bool = True) -> dict:
    """Train from scratch on `config.quality_tokens` tokens; validation loss every `eval_every_tokens`."""
    if config.quality_tokens < config.tokens_per_step:
        raise ValueError(f"quality_tokens: {config.quality_tokens} is less than one step ({config.tokens_per_step})")

    def body(result: dict, config: TrainConfig, data: TokenData, device: torch.device) -> None:
        total_steps = config.quality_tokens // config.tokens_per_step
        eval_every = max(1, (config.eval_every_tokens or config.quality_tokens // 8) // config.tokens_per_step)
        trainer = Trainer(config, data, device, total_steps=total_steps)
        result["model"] = _describe_model(trainer)
        curve = [{"tokens": 0, "train_loss": None, "val_loss": trainer.evaluate()}]
        tokens = total_steps * config.tokens_per_step
        with measure(f"{config.variant}/{config.mode}/quality", tokens=tokens,
                     flops=tokens * trainer.flops.training_flops_per_token) as window:
            bar = tqdm(range(total_steps), desc=f"{config.variant} {config.mode} quality", disable=not progress)
            for step in bar:
                loss = trainer.step()
                if (step + 1) % eval_every == 0 or step + 1 == total_steps:
                    entry = {"tokens": (step + 1) * config.tokens_per_step,
                             "train_loss": _check_finite(loss, f"at step {step + 1}"), "val_loss": trainer.evaluate()}
                    curve.append(entry)
                    if progress:
                        _show(bar, window, entry["train_loss"], entry["tokens"], val=f"{entry['val_loss']:.3f}")
        result["measurement"] = window.result.to_dict()
        result["loss_curve"] = curve
        result["steps"] = total_steps
        result["val_loss"] = curve[-1]["val_loss"]
        result["note"] = "evaluation steps run inside the window: its energy covers training and evaluation"

    return _run("quality", config, out_path, cache_dir, body)

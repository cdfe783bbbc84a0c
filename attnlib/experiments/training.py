"""The training engine every training family shares: one `TrainConfig`, one `Trainer`, three execution modes.

- `eager`: PyTorch as written.
- `compile`: the whole forward pass and loss through one `torch.compile` (what users write), with no attention
  mask built (the family's `causal_hidden_states`, `attnlib.archs`), so the causal kernels stay on.
- `graph`: the same compiled function with `mode="reduce-overhead"`: inductor replays CUDA graphs, which removes
  the kernel-launch cost that bounds a 124M model's step. A variant whose graph cannot be captured fails its
  warm-up with the reason (`cudagraph_or_error`), recorded as `unsupported`.

`compile_scope="block"` compiles one transformer block (its code is shared by all layers) and the head + loss
instead of the whole model: the same kernels from a twelfth of the compilation work, but one graph per block call.
`compile_scope="nested"` keeps the whole-model graph and marks each block a nested compile region
(`torch.compiler.nested_compile_region`): the block is compiled once and reused by every layer inside one graph.

Every variant gets the same seed, data order and hyper-parameters: bf16 autocast on CUDA (fp32 on CPU), AdamW
(fused on CUDA), linear warm-up then cosine decay, gradient clipping, gradient accumulation.
"""

from __future__ import annotations

import functools
import gc
import math
import time
from pathlib import Path
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from ..data import IGNORE_INDEX, TokenData, prepare_data
from ..flops import training_flops_per_token
from ..archs import get_arch
from ..model import attention_parameters, build_model
from ..registry import get_variant
from ..variants._common import strict_recompiles

MODES = ("eager", "compile", "graph")
COMPILE_SCOPES = ("model", "block", "nested")


@dataclass
class TrainConfig:
    """One training setup. `model` holds `build_model` overrides (the family's config fields and the variant's
    parameters); `arch` is the model family (`attnlib.archs`)."""

    variant: str = "sdpa"
    arch: str = "gpt2"
    mode: str = "eager"  # one of MODES
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
    seed: int = 1234  # weights, dropout and data order
    compile_scope: str = "model"  # "model": one graph for forward + loss; "block": each block and the head + loss;
    # "nested": one graph, the block compiled once and reused by every layer
    # the head and loss this many tokens at a time, gradients with them (`chunked_causal_lm_loss`); None: all at once
    loss_chunk_tokens: int | None = None
    activation_checkpointing: bool = False  # each layer recomputed in backward: memory for long sequences

    def __post_init__(self) -> None:
        spec, _ = get_variant(self.variant), get_arch(self.arch)  # ValueError listing the names
        if self.arch in spec.unsupported:
            raise ValueError(f"variant: {self.variant} has no form on {self.arch}: {spec.unsupported[self.arch]}")
        if self.mode not in MODES:
            raise ValueError(f"mode: must be one of {', '.join(MODES)}, got {self.mode!r}")
        for name in ("seq_len", "batch_size", "grad_accum"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name}: must be an integer >= 1, got {getattr(self, name)!r}")
        if self.compile_scope not in COMPILE_SCOPES:
            raise ValueError(f"compile_scope: one of {', '.join(COMPILE_SCOPES)}, got {self.compile_scope!r}")
        if self.lr <= 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")
        if self.loss_chunk_tokens is not None and (not isinstance(self.loss_chunk_tokens, int)
                                                   or self.loss_chunk_tokens < 1):
            raise ValueError(f"loss_chunk_tokens: an integer >= 1 or None, got {self.loss_chunk_tokens!r}")

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.grad_accum * self.seq_len

    def token_data(self, cache_dir: Path, seq_len: int | None = None) -> TokenData:
        """The setup's dataset in blocks of `seq_len` (default its own) in its model family's tokens."""
        return prepare_data(self.dataset, seq_len or self.seq_len, cache_dir, self.max_documents,
                            get_arch(self.arch).tokenizer)


def causal_lm_loss(hidden: torch.Tensor, labels: torch.Tensor, lm_head: torch.nn.Module) -> torch.Tensor:
    """Next-token cross-entropy from the last hidden states `[B, T, C]`, labels `[B, T]` (-100 ignored): the
    logits of the last position predict nothing, so they are not computed. Same maths as transformers' loss."""
    return next_token_loss(lm_head(hidden[:, :-1]), labels)


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (fp32) of the logits of positions 0..T-2 `[B, T-1, V]` against `labels[:, 1:]`."""
    return F.cross_entropy(logits.float().flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX)


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of `hidden @ weight.T` against `labels`, `chunk` rows at a time, with its gradients
    computed in the same pass (as Liger's fused linear cross-entropy does): only one chunk's logits ever exist, where
    the plain loss keeps all `[N, V]` of them, in fp32, for backward. The matmuls run in the autocast dtype and the
    softmax in fp32, as under autocast; the FLOPs are the plain loss's (one product forward, two backward)."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk: int,
                with_grads: bool) -> torch.Tensor:
        device = hidden.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
        w = weight.to(dtype)
        grad_hidden = torch.empty_like(hidden) if with_grads else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if with_grads else None
        loss_sum = torch.zeros((), device=hidden.device, dtype=torch.float32)
        with torch.autocast(device, enabled=False):
            for start in range(0, hidden.shape[0], chunk):
                h, y = hidden[start:start + chunk].to(dtype), labels[start:start + chunk]
                logits = (h @ w.T).float()
                lse = torch.logsumexp(logits, dim=-1)
                valid = y != IGNORE_INDEX
                target = y.clamp(min=0).unsqueeze(1)
                loss_sum += ((lse - logits.gather(1, target).squeeze(1)) * valid).sum()
                if not with_grads:
                    continue
                grad_logits = (logits - lse.unsqueeze(1)).exp_()  # softmax - one-hot: d(sum of losses)/d logits
                grad_logits.scatter_add_(1, target, torch.full_like(lse, -1.0).unsqueeze(1))
                grad_logits = (grad_logits * valid.unsqueeze(1)).to(dtype)
                grad_hidden[start:start + chunk] = grad_logits @ w
                grad_weight += (grad_logits.T @ h).float()
        count = (labels != IGNORE_INDEX).sum()
        ctx.save_for_backward(grad_hidden, grad_weight, count)
        return loss_sum / count

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        grad_hidden, grad_weight, count = ctx.saved_tensors
        scale = grad_loss / count
        return (grad_hidden * scale).to(grad_hidden.dtype), (grad_weight * scale).to(grad_weight.dtype), None, None, None


def chunked_causal_lm_loss(hidden: torch.Tensor, labels: torch.Tensor, lm_head: torch.nn.Module,
                           chunk_tokens: int) -> torch.Tensor:
    """`causal_lm_loss` without the logits of the whole batch: at 64K tokens their fp32 copy alone is 12 GiB."""
    if getattr(lm_head, "bias", None) is not None:
        raise NotImplementedError("chunked_causal_lm_loss: an lm_head without bias (GPT-2's) is supported")
    width = hidden.shape[-1]
    return _ChunkedLinearCrossEntropy.apply(hidden[:, :-1].reshape(-1, width), lm_head.weight,
                                            labels[:, 1:].reshape(-1), chunk_tokens, torch.is_grad_enabled())


class Trainer:
    """Model, optimiser, schedule and a deterministic batch stream for one `TrainConfig`."""

    def __init__(self, config: TrainConfig, data: TokenData, device: torch.device, total_steps: int):
        self.config, self.data, self.device = config, data, device
        self.arch = get_arch(config.arch)  # the family's anatomy: its blocks, its forward without a mask
        if config.mode == "graph" and device.type != "cuda":
            raise NotImplementedError("mode 'graph': CUDA graphs need a CUDA device")
        self.train_ids, self.train_labels = data.train_ids.to(device), data.train_labels.to(device)  # no host copies
        self.model = self._fresh_model(config.seed).train()
        self.flops = training_flops_per_token(self.model, config.seq_len)
        self.autocast_dtype = torch.bfloat16 if device.type == "cuda" else None
        self._loss, self._head_loss = self._forward_loss, causal_lm_loss
        if config.loss_chunk_tokens is not None:
            self._head_loss = functools.partial(chunked_causal_lm_loss, chunk_tokens=config.loss_chunk_tokens)
        if config.mode != "eager":
            import torch._inductor.config as inductor_config

            inductor_config.triton.cudagraph_or_error = True  # a graph that cannot be captured is an error, not slow
            strict_recompiles()  # each Trainer adds guarded entries (train, eval) for the same code
            compile_mode = "reduce-overhead" if config.mode == "graph" else None
            if config.compile_scope in ("model", "nested"):
                self._loss = torch.compile(self._forward_loss, mode=compile_mode)
            else:
                for block in self.arch.blocks(self.model):
                    block.compile(mode=compile_mode)
                self._head_loss = torch.compile(self._head_loss, mode=compile_mode)
        self.restart(config.seed, total_steps)

    def _fresh_model(self, seed: int) -> torch.nn.Module:
        """Initialised on the trainer's device: on a GPU in milliseconds, where the host takes 1.5-2.5 s a model
        (a trials job builds six: one per mode, one per quality seed)."""
        torch.manual_seed(seed)
        with torch.device(self.device):
            return build_model(self.config.variant, seq_len=self.config.seq_len, arch=self.config.arch,
                               **self.config.model)

    def restart(self, seed: int, total_steps: int) -> None:
        """Fresh weights, optimiser state, schedule and data order for `seed`, keeping the compiled code: the new
        weights are copied into the same parameters."""
        if seed != self.config.seed or hasattr(self, "optimizer"):
            self.model.load_state_dict(self._fresh_model(seed).state_dict())
        torch.manual_seed(seed)
        fused = self.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(self._param_groups(), lr=self.config.lr, betas=(0.9, 0.95), fused=fused)
        self.optimizer_name = f"AdamW ({'fused' if fused else 'foreach'})"
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor(total_steps))
        self._batches = self._batch_stream(seed)

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

    def _batch_stream(self, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Blocks in a seeded random order, reshuffled each epoch by (seed, epoch): the same for every variant."""
        n, b = len(self.train_ids), self.config.batch_size
        if n < b:
            raise ValueError(f"batch_size: {b} is more than the {n} training blocks of the dataset")
        epoch = 0
        while True:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).to(self.device)
            for start in range(0, n - b + 1, b):
                idx = order[start:start + b]
                yield self.train_ids[idx], self.train_labels[idx]
            epoch += 1

    def _forward_loss(self, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean next-token loss of a batch; the function `compile` and `graph` modes compile."""
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            hidden = self.arch.causal_hidden_states(self.model, ids,
                                                    shared_blocks=self.config.compile_scope == "nested",
                                                    checkpoint=self.config.activation_checkpointing)
            return self._head_loss(hidden, labels, self.model.lm_head)

    def data_parallel(self, group: Any = None) -> None:
        """From now on, average the gradients over the ranks of `group` in every backward (PyTorch's
        DistributedDataParallel, each rank on its own card), each rank training on its own batches (the data order
        drawn from seed + rank). Eager mode only: DDP's graph splitting under torch.compile is not checked here."""
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel

        if self.config.mode != "eager":
            raise NotImplementedError(f"data_parallel: eager mode only, got mode {self.config.mode!r}")
        device_ids = [torch.cuda.current_device()] if self.device.type == "cuda" else None  # torchrun's card
        self._loss = DistributedDataParallel(_ForwardLoss(self), device_ids=device_ids, process_group=group)
        self._batches = self._batch_stream(self.config.seed + dist.get_rank(group))

    def step(self) -> torch.Tensor:
        """One optimiser step over `grad_accum` micro-batches; returns the (device) loss, unsynchronised."""
        total = torch.zeros((), device=self.device)
        for _ in range(self.config.grad_accum):
            ids, labels = next(self._batches)
            if self.config.mode == "graph":
                torch.compiler.cudagraph_mark_step_begin()
            loss = self._loss(ids, labels) / self.config.grad_accum
            loss.backward()
            total += loss.detach()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()
        return total

    def move(self, device: torch.device) -> None:
        """Move the model, the optimiser's state and the training data to `device` (the host, to keep a trainer
        aside without holding GPU memory; back to the GPU before stepping again)."""
        self.model.to(device)  # in place: the optimiser's parameters are the same objects
        for state in self.optimizer.state.values():
            for key, value in state.items():
                if torch.is_tensor(value):
                    state[key] = value.to(device)
        self.train_ids, self.train_labels = self.train_ids.to(device), self.train_labels.to(device)

    def steps_for(self, seconds: float, window: Any) -> tuple[int, torch.Tensor]:
        """Train inside an open `measure` window until `seconds` have passed on the host, and report the work to
        it; returns (steps, last loss). The window's exit synchronises, so the GPU's window (which the energy
        covers) is never shorter than `seconds`."""
        steps, start = 0, time.perf_counter()
        while steps == 0 or time.perf_counter() - start < seconds:
            loss = self.step()
            steps += 1
        tokens = steps * self.config.tokens_per_step
        window.add_work(tokens=tokens, flops=tokens * self.flops.training_flops_per_token)
        return steps, loss

    @torch.no_grad()
    def evaluate(self, batches: int) -> float:
        """Mean validation loss over the first `batches` validation batches (the same for every variant).
        The whole-model compiled function is not used: the same maths, without a second compilation."""
        ids, labels = self.data.val_ids, self.data.val_labels
        if len(ids) < self.config.batch_size:
            raise ValueError(f"dataset: {len(ids)} validation blocks, fewer than one batch ({self.config.batch_size})")
        self.model.eval()
        losses = []
        for start in range(0, min(len(ids), batches * self.config.batch_size), self.config.batch_size):
            batch = slice(start, start + self.config.batch_size)
            losses.append(self._forward_loss(ids[batch].to(self.device), labels[batch].to(self.device)).item())
        self.model.train()
        return sum(losses) / len(losses)

    def describe(self) -> dict[str, Any]:
        """What ran: parameter counts, kernel, optimiser, FLOPs per token."""
        spec = get_variant(self.config.variant)
        return {
            "params": sum(p.numel() for p in self.model.parameters()),
            "attention_params": attention_parameters(self.model),
            "kernel": spec.kernel(self.device.type), "exact": spec.exact, "optimizer": self.optimizer_name,
            "training_flops_per_token": self.flops.training_flops_per_token,
        }


class _ForwardLoss(torch.nn.Module):
    """A trainer's model and loss as one module: DDP arms its gradient all-reduce in its own forward, so the loss
    must be computed there (a backward outside it would train each rank alone, silently)."""

    def __init__(self, trainer: Trainer):
        super().__init__()
        self.model, self.loss = trainer.model, trainer._forward_loss

    def forward(self, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss(ids, labels)


@contextmanager
def frozen_gc() -> Iterator[None]:
    """Collect the young generations, then keep every object alive now (compiled graphs, guards: millions of them)
    out of Python's cyclic collector until the block ends. A full collection walks them all and stalls a host-bound
    loop (compile mode launches every kernel from Python) for tens of milliseconds at random points of a measured
    window. (The old generation is not walked here: a full pass costs about 0.2 s per window, and a job's `free`
    collects it between cells.)"""
    gc.collect(1)
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def require_gpt2(train: TrainConfig, family: str) -> None:
    """`ValueError` unless `train` is GPT-2's: `family` (an experiment family) reads GPT-2's modules directly."""
    if train.arch != "gpt2":
        raise ValueError(f"arch: the {family} family measures GPT-2 models only (it reads GPT-2's modules), got "
                         f"{train.arch!r}")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_finite(loss: torch.Tensor, where: str) -> float:
    """The loss as a float (synchronises); `FloatingPointError` if it is NaN or infinite."""
    value = loss.float().item()
    if not math.isfinite(value):
        raise FloatingPointError(f"loss is {value} {where}")
    return value


def failure_status(error: BaseException) -> str:
    """The status a failed job part records: oom, nan, unsupported or error."""
    if isinstance(error, torch.OutOfMemoryError):
        return "oom"
    if isinstance(error, FloatingPointError):
        return "nan"
    text = str(error)
    if isinstance(error, NotImplementedError) or "No available kernel" in text or "cudagraph" in text.lower():
        return "unsupported"
    return "error"

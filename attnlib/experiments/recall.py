"""Recall: multi-query associative recall (MQAR) as Zoology defines it (Arora, Eyuboglu et al., 2023,
arXiv:2312.04927), learnt by small models of each mechanism, beside the energy each run took.

A sequence opens with `kv_pairs` key-value pairs (keys from the lower half of the vocabulary, values from the upper
half, each key once), and the rest of it asks: a pair's key reappears, at a distance drawn from Zoology's power law
(`power_a` = 0.01: most queries come soon after the pairs, some far), and the model must predict the value that
followed it. The other positions hold random tokens and are not scored. A mechanism that cannot look back far
enough (a window shorter than the distance) or that compresses the context into a fixed state (linear attention)
loses recall that exact attention keeps: the quality cost a cost crossover hides.

One job per variant: for each sequence length and number of pairs, a fixed set of training and test sequences (the
same for every variant: drawn from the cell's own seed), then one run per seed (fresh weights and data order) of
`steps` optimiser steps in one measured window, and the accuracy of the value predictions on the test sequences.
Each run is a `RecallResult`. The model is GPT-2 at a small size (`train.model`), its positions sized to the
length, the variant's own parameters as in the language-model runs (sliding_window's window included).

    ids, labels = mqar(num_examples=4, seq_len=64, kv_pairs=4, vocab_size=256, seed=0)
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..archs import get_arch
from ..data import IGNORE_INDEX, DataInfo, TokenData
from ..measurement.trials import round_orders
from ..results import ModelInfo, RecallResult, finished_result
from ._job import WindowedJob
from .training import TrainConfig, Trainer, check_finite, failure_status, frozen_gc

NOTEBOOK = "recall.ipynb"


def mqar(num_examples: int, seq_len: int, kv_pairs: int, vocab_size: int, seed: int,
         power_a: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """`num_examples` MQAR sequences `[N, seq_len]` and their labels in attnlib's next-token convention (`labels[t]`
    is what the logits at t - 1 must predict, as `causal_lm_loss` reads them: the value after a query key, else
    -100). Keys come from 1 .. vocab_size / 2 - 1, values from vocab_size / 2 .. vocab_size - 1; query `i` asks for
    pair `i`'s key at gap g (in pairs of positions after the context), g drawn without replacement with probability
    proportional to power_a g^(power_a - 1); every other position is a random token (Zoology's `random_non_queries`)."""
    context = 2 * kv_pairs
    if seq_len % 2 or 4 * kv_pairs > seq_len or vocab_size <= seq_len or kv_pairs >= vocab_size // 2:
        raise ValueError(f"mqar: needs an even seq_len >= 4 x kv_pairs and vocab_size > seq_len, with room for "
                         f"{kv_pairs} distinct keys; got seq_len {seq_len}, kv_pairs {kv_pairs}, vocab {vocab_size}")
    g = torch.Generator().manual_seed(seed)
    half = vocab_size // 2
    # kv_pairs distinct ids in random order: the smallest of uniform draws, found without sorting them all (100K
    # sequences draw 400M numbers)
    keys = torch.rand(num_examples, half - 1, generator=g).topk(kv_pairs, dim=1, largest=False).indices + 1
    values = torch.rand(num_examples, half, generator=g).topk(kv_pairs, dim=1, largest=False).indices + half
    space = (seq_len - context) // 2
    weights = power_a * torch.arange(1, space + 1, dtype=torch.float64) ** (power_a - 1)
    gaps = torch.multinomial(weights.expand(num_examples, -1), kv_pairs, replacement=False, generator=g)
    ids = torch.randint(vocab_size, (num_examples, seq_len), generator=g)
    ids[:, 0:context:2], ids[:, 1:context:2] = keys, values
    query = context + 2 * gaps  # where each key reappears
    ids.scatter_(1, query, keys)
    labels = torch.full((num_examples, seq_len), IGNORE_INDEX, dtype=torch.long)
    labels.scatter_(1, query + 1, values)  # predicted from the query's position: the next position's label
    return ids, labels


@dataclass
class RecallConfig:
    """One variant's MQAR job: `train` is the optimiser setup and the variant's parameters, `model` the small model
    over them (Zoology's two layers; its vocabulary is MQAR's); `seq_len` and `batch_size` are set per length
    (`tokens_per_step // seq_len` sequences a step, at least 1)."""

    train: TrainConfig
    model: dict[str, Any] = field(default_factory=lambda: dict(n_layer=2, n_embd=128, n_head=4, vocab_size=8192))
    seq_lens: list[int] = field(default_factory=lambda: [256, 1024, 4096])
    kv_pairs: list[int] = field(default_factory=lambda: [16, 64])
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    steps: int = 1000
    tokens_per_step: int = 65536
    train_examples: int = 100_000  # per (length, pairs) cell at most (Zoology's count), steps x batch if fewer
    test_examples: int = 1000
    power_a: float = 0.01
    data_seed: int = 0  # the cell's sequences: the same for every variant and seed
    idle_s: float = 2.0
    order_seed: int = 0  # draws the order of the cells (slow drift of the card spreads over them)

    def __post_init__(self) -> None:
        if isinstance(self.train, dict):
            self.train = TrainConfig(**self.train)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: one or more distinct seeds, got {self.seeds}")
        if self.steps < 1 or self.tokens_per_step < 1 or self.test_examples < 1:
            raise ValueError("steps, tokens_per_step and test_examples must be >= 1, got "
                             f"{self.steps}, {self.tokens_per_step}, {self.test_examples}")
        vocab = self.model.get("vocab_size")
        if vocab is None:
            raise ValueError("model.vocab_size: MQAR's vocabulary (Zoology uses 8,192) must be given")
        for seq_len, pairs in self.cells():
            mqar(1, seq_len, pairs, vocab, 0)  # ValueError for a cell that cannot be built
            if self.train_examples < self.batch_size(seq_len):
                raise ValueError(f"train_examples: {self.train_examples} is less than one batch at T = {seq_len}")
            self.cell_config(seq_len)  # bad model parameters fail here

    def cells(self) -> list[tuple[int, int]]:
        """(seq_len, kv_pairs) with room for the pairs and as many queries (4 x pairs <= seq_len)."""
        return [(t, p) for t in self.seq_lens for p in self.kv_pairs if 4 * p <= t]

    def batch_size(self, seq_len: int) -> int:
        return max(1, self.tokens_per_step // seq_len)

    def cell_config(self, seq_len: int) -> TrainConfig:
        arch = get_arch(self.train.arch)
        return dataclasses.replace(self.train, seq_len=seq_len, batch_size=self.batch_size(seq_len), grad_accum=1,
                                   model={**self.train.model, **self.model, **arch.length_overrides(seq_len),
                                          "bos_token_id": None, "eos_token_id": None})  # MQAR has no such tokens

    def result_name(self, seq_len: int, pairs: int, seed: int) -> str:
        return f"{self.train.variant}__recall__T{seq_len}__kv{pairs}__seed{seed}.json"

    def result_names(self) -> list[str]:
        return [self.result_name(t, p, s) for t, p in self.cells() for s in self.seeds]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def recall_data(config: RecallConfig, seq_len: int, pairs: int) -> TokenData:
    """The cell's training and test sequences as `TokenData` (the trainer's batch stream and loss read them)."""
    vocab = config.model["vocab_size"]
    seed = config.data_seed + 1_000_003 * seq_len + pairs
    examples = min(config.train_examples, config.steps * config.batch_size(seq_len))  # no repeats where it can
    train_ids, train_labels = mqar(examples, seq_len, pairs, vocab, seed, config.power_a)
    test_ids, test_labels = mqar(config.test_examples, seq_len, pairs, vocab, seed + 1, config.power_a)
    info = DataInfo(dataset=f"mqar-T{seq_len}-kv{pairs}", dataset_description=(
        f"MQAR (Zoology): {pairs} key-value pairs then {pairs} queries at power-law gaps (a = {config.power_a}) "
        f"in {seq_len} tokens of a {vocab}-token vocabulary; data seed {seed}"),
        dataset_sha256="", documents=examples + config.test_examples, train_documents=examples, val_documents=config.test_examples, tokenizer="none (synthetic ids)",
        tokenizer_sha256="", train_tokens=train_ids.numel(), val_tokens=test_ids.numel(), val_ngram_overlap=0.0,
        val_ngram_overlap_before=0.0, val_documents_dropped=0, seq_len=seq_len, tokenizer_name="synthetic",
        eot_id=-1)
    return TokenData(train_ids, train_labels, test_ids, test_labels, info)


@torch.no_grad()
def recall_accuracy(trainer: Trainer, batch_size: int) -> float:
    """Share of the test sequences' queries whose value the model predicts (argmax at the query's position)."""
    model, data = trainer.model, trainer.data
    model.eval()
    right = total = 0
    for start in range(0, len(data.val_ids), batch_size):
        ids = data.val_ids[start:start + batch_size].to(trainer.device)
        labels = data.val_labels[start:start + batch_size].to(trainer.device)
        with torch.autocast(trainer.device.type, dtype=trainer.autocast_dtype,
                            enabled=trainer.autocast_dtype is not None):
            hidden = trainer.arch.causal_hidden_states(model, ids)
        asked = labels[:, 1:] != IGNORE_INDEX  # the logits at t predict labels[t + 1]
        predicted = model.lm_head(hidden[:, :-1][asked]).argmax(-1)
        right += int((predicted == labels[:, 1:][asked]).sum())
        total += int(asked.sum())
    model.train()
    return right / total


def run_recall_job(config: RecallConfig, out_dir: Path, cache_dir: Path | None = None,
                   progress: bool = True) -> list[RecallResult]:
    """Every (length, pairs, seed) run of `config.train.variant`, less those `out_dir` holds (a resumed job); writes
    one JSON result per run. `cache_dir` is unused (the data is generated) and kept for the notebook's signature."""
    job = WindowedJob(out_dir, config.idle_s)
    variant, results = config.train.variant, []
    job.codecarbon.start()
    try:
        for seq_len, pairs in tqdm(round_orders(config.cells(), 1, config.order_seed)[0], desc=f"{variant} recall",
                                   disable=not progress):
            todo = [s for s in config.seeds if finished_result(job.out_dir / config.result_name(seq_len, pairs, s))
                    is None]
            results += [finished_result(job.out_dir / config.result_name(seq_len, pairs, s))
                        for s in config.seeds if s not in todo]
            if todo:
                results += _cell(job, config, seq_len, pairs, todo)
    finally:
        if job.codecarbon.running:
            job.codecarbon.stop()
    return results


def _cell(job: WindowedJob, config: RecallConfig, seq_len: int, pairs: int, seeds: list[int]) -> list[RecallResult]:
    """The runs of one (length, pairs) cell: one trainer (its compiled code shared), restarted for each seed."""
    train, trainer, results = config.cell_config(seq_len), None, []
    data = recall_data(config, seq_len, pairs)
    for seed in seeds:
        common = dict(variant=train.variant, mode=train.mode, arch=train.arch, provenance=job.origin,
                      config=config.to_dict(), data=data.info, seq_len=seq_len, kv_pairs=pairs, seed=seed)
        start = time.perf_counter()
        try:
            if trainer is None:  # compilation and CUDA-graph recording in one unmeasured step
                trainer = Trainer(dataclasses.replace(train, seed=seed), data, job.device, total_steps=config.steps)
                check_finite(trainer.step(), "at the unmeasured first step")
            trainer.restart(seed, config.steps)
            tokens = config.steps * train.tokens_per_step
            with frozen_gc(), job.window(f"{train.variant}/recall/T{seq_len}/kv{pairs}/seed{seed}") as window:
                for _ in range(config.steps):
                    loss = trainer.step()
                window.add_work(tokens=tokens, flops=tokens * trainer.flops.training_flops_per_token)
            final_loss = check_finite(loss, "at the last step")
            result = RecallResult(**common, model=ModelInfo(**trainer.describe()), measurement=window.result,
                                  steps=config.steps, train_loss=final_loss,
                                  accuracy=recall_accuracy(trainer, train.batch_size),
                                  job_wall_s=time.perf_counter() - start)
        except Exception as error:  # a failed run is a result; the next seed starts afresh
            result = RecallResult(**common, status=failure_status(error), job_wall_s=time.perf_counter() - start,
                                  error=f"{type(error).__name__}: {str(error)[:2000]}")
            trainer = None
        results.append(job.write(config.result_name(seq_len, pairs, seed), result))
    job.free()
    return results

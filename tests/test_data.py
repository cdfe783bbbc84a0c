"""Data: rendering, the deterministic split, the offline tokenizer, packing and loss masking, the disk cache."""

from __future__ import annotations

import json

import pytest
import torch

import numpy as np

from attnlib.data import (DEBIAN_DOCS, EOT_ID, IGNORE_INDEX, MAX_DOC_OVERLAP, deduplicate, load_corpus,
                          load_messages_file, load_tokenizer, ngram_hashes, pack, prepare_data, render_conversation,
                          split_documents, tokenize_documents)


def test_render_conversation_keeps_roles() -> None:
    text = render_conversation([{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": " Hello. "}])
    assert text == "<|user|>\nHi?\n<|assistant|>\nHello.\n"
    with pytest.raises(ValueError, match="messages"):
        render_conversation([{"role": "narrator", "content": "x"}])


def test_offline_tokenizer_is_gpt2() -> None:
    tok = load_tokenizer()
    assert (tok.name, tok.vocab_size, tok.eot_id, tok.dtype) == ("gpt2", 50257, EOT_ID, np.uint16)
    assert tok.encode(["Hello world"]) == [[15496, 995]] and tok.decode([15496, 995]) == "Hello world"


def test_llama3_tokenizer_is_metas_and_its_ids_do_not_wrap(tmp_path) -> None:
    """The llama family's tokenizer gives the ids of Meta's own `llama_models` Tokenizer, 128,256 of them, stored
    as int32 (uint16 would wrap every id above 65,535)."""
    from llama_models.llama3.tokenizer import Tokenizer as MetaTokenizer

    tok, meta = load_tokenizer("llama3"), MetaTokenizer.get_instance()
    texts = ["Hello world, the quick brown fox; Ünïcode 12345", "def f(x):\n    return x ** 2  # ok\n\n\n", "日本語"]
    assert tok.encode(texts) == [meta.encode(t, bos=False, eos=False) for t in texts]
    assert (tok.vocab_size, tok.eot_id, tok.dtype) == (128_256, meta.eos_id, np.int32) == (meta.n_words, 128_001, np.int32)
    docs = tokenize_documents(["Ünïcode 日本語 " * 40], tok)
    assert docs[0].dtype == np.int32 and docs[0].max() > 2**16 and docs[0][-1] == 128_001
    with pytest.raises(ValueError, match="valid names: gpt2, llama3"):
        load_tokenizer("sentencepiece")


def test_another_tokenizer_has_its_own_cache_and_a_committed_corpus_decodes_exactly(tmp_path) -> None:
    """A corpus committed in GPT-2 tokens decodes to its documents, which the llama3 tokenizer then splits,
    tokenizes and deduplicates into a cache folder of its own."""
    from attnlib.data import Corpus, _cache_key, committed_corpus, write_tokens

    assert _cache_key("python-docs", 100) != _cache_key("python-docs", 100, "llama3")
    documents = [f"Document {i}: ünïcode, `code`, 12345 and\n\n  indented lines {i * 7}." for i in range(60)]
    write_tokens(Corpus("tiny", documents, "a test corpus"), tmp_path / "committed")
    decoded = committed_corpus(tmp_path / "committed")
    info = json.loads((tmp_path / "committed" / "info.json").read_text())  # validation duplicates were dropped
    assert set(decoded.documents) <= set(documents) and decoded.name == "tiny"
    assert len(decoded.documents) == info["train_documents"] + info["val_documents"] > 40
    data = prepare_data("python-docs", 32, tmp_path / "cache", 50, "llama3")
    assert data.info.tokenizer_name == "llama3" and data.info.eot_id == 128_001
    assert (data.train_ids == 128_001).any() and int(data.train_ids.max()) < 128_256
    assert data.info.tokenizer_sha256 != prepare_data("python-docs", 32, tmp_path / "cache", 50).info.tokenizer_sha256


def test_packing_and_loss_masking() -> None:
    stream = torch.arange(10).numpy().astype("uint16")
    ids, labels = pack(stream, 4)
    assert ids.shape == (3, 4)
    assert ids.flatten()[:10].tolist() == list(range(10))
    # the tail of the last block is filler: end-of-text ids whose labels are ignored by the loss
    assert ids[2, 2:].tolist() == [EOT_ID, EOT_ID] and labels[2, 2:].tolist() == [IGNORE_INDEX] * 2
    assert (labels[ids != EOT_ID] == ids[ids != EOT_ID]).all() and (labels[:2] == ids[:2]).all()
    logits = torch.randn(3, 4, 7)
    masked = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 7), (labels[:, 1:] % 7).where(labels[:, 1:] >= 0, labels[:, 1:]).reshape(-1))
    kept = labels[:, 1:].reshape(-1) != IGNORE_INDEX
    manual = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 7)[kept], (labels[:, 1:].reshape(-1)[kept] % 7))
    torch.testing.assert_close(masked, manual)


def test_documents_are_separated_by_end_of_text() -> None:
    tok = load_tokenizer()
    docs = tokenize_documents(["one", "two"], tok)
    assert docs[0].dtype == np.uint16
    assert [d.tolist() for d in docs] == [[505, EOT_ID], [11545, EOT_ID]]


def test_split_is_deterministic_and_order_free() -> None:
    docs = [f"document number {i}" for i in range(200)]
    train, val = split_documents(docs)
    train2, val2 = split_documents(list(reversed(docs)))
    assert set(val) == set(val2) and set(train) == set(train2) and not set(train) & set(val)
    assert 5 <= len(val) <= 40


def test_messages_file_and_cache(tmp_path) -> None:
    rows = [{"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": " ".join(f"w{i}x{j}" for j in range(20))}]}
            for i in range(40)]
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    assert len(load_messages_file(path).documents) == 40
    data = prepare_data(str(path), 16, tmp_path / "cache")
    assert data.info.dataset == "file:chat.jsonl" and len(data.info.dataset_sha256) == 64
    assert data.train_ids.shape[1] == 16 and len(data.val_ids) > 0
    again = prepare_data(str(path), 16, tmp_path / "cache")  # from the cache
    assert torch.equal(again.train_ids, data.train_ids) and again.info == data.info


def test_offline_default_is_real_text() -> None:
    corpus = load_corpus("python-docs")
    text = " ".join(corpus.documents[:50])
    assert len(corpus.documents) > 100 and " the " in text and "Python" in corpus.description


def test_bad_dataset_arguments() -> None:
    with pytest.raises(ValueError, match="dataset"):
        load_corpus("/no/such/file.jsonl")
    with pytest.raises(ValueError, match="seq_len"):
        pack(torch.arange(3).numpy(), 0)


def test_ngram_hashes_see_shared_runs_only() -> None:
    a = np.arange(30, dtype=np.uint16)
    assert len(ngram_hashes(a)) == 30 - 13 + 1 and len(ngram_hashes(a[:12])) == 0
    assert set(ngram_hashes(a[5:25])) <= set(ngram_hashes(a))
    assert not set(ngram_hashes(a + 100)) & set(ngram_hashes(a))


def test_deduplication_drops_overlapping_validation_documents() -> None:
    rng = np.random.default_rng(0)
    train = [rng.integers(0, 50000, 500).astype(np.uint16) for _ in range(5)]
    copied = train[2][100:300].copy()  # a passage from training
    fresh = rng.integers(0, 50000, 300).astype(np.uint16)
    kept, overlap = deduplicate(train, [copied, fresh])
    assert len(kept) == 1 and kept[0] is fresh and overlap["val_documents_dropped"] == 1
    assert overlap["val_ngram_overlap"] <= MAX_DOC_OVERLAP < overlap["val_ngram_overlap_before"]


def test_committed_debian_docs_corpus() -> None:
    """The corpus the paper trains on: >= 10M tokens, deduplicated validation, packages named with hashes."""
    data = prepare_data("debian-docs", 512, DEBIAN_DOCS)
    info = data.info
    assert info.train_tokens >= 10_000_000 and info.val_ngram_overlap <= 0.01
    assert "linux-doc" in info.dataset_description and "sha256" in info.dataset_description
    assert data.train_ids.shape == (-(-info.train_tokens // 512), 512)

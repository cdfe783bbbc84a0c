"""Data: rendering, the deterministic split, the offline tokenizer, packing and loss masking, the disk cache."""

from __future__ import annotations

import json

import pytest
import torch

from attnlib.data import (EOT_ID, IGNORE_INDEX, load_corpus, load_messages_file, load_tokenizer, pack, prepare_data,
                          render_conversation, split_documents, tokenize_stream)


def test_render_conversation_keeps_roles() -> None:
    text = render_conversation([{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": " Hello. "}])
    assert text == "<|user|>\nHi?\n<|assistant|>\nHello.\n"
    with pytest.raises(ValueError, match="messages"):
        render_conversation([{"role": "narrator", "content": "x"}])


def test_offline_tokenizer_is_gpt2() -> None:
    tok = load_tokenizer()
    assert len(tok.encoder) == 50257
    assert tok.encoder("Hello world", add_special_tokens=False)["input_ids"] == [15496, 995]


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
    stream = tokenize_stream(["one", "two"], tok)
    assert stream.tolist() == [505, EOT_ID, 11545, EOT_ID]


def test_split_is_deterministic_and_order_free() -> None:
    docs = [f"document number {i}" for i in range(200)]
    train, val = split_documents(docs)
    train2, val2 = split_documents(list(reversed(docs)))
    assert set(val) == set(val2) and set(train) == set(train2) and not set(train) & set(val)
    assert 5 <= len(val) <= 40


def test_messages_file_and_cache(tmp_path) -> None:
    rows = [{"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": "answer " * 20}]}
            for i in range(40)]
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    assert len(load_messages_file(path).documents) == 40
    data = prepare_data(str(path), 16, tmp_path / "cache")
    assert data.info["dataset"] == "file:chat.jsonl" and len(data.info["dataset_sha256"]) == 64
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

"""TextTokenizer on a tiny sentencepiece model trained at test time (about 20 ms)."""

import io

import mlx.core as mx
import numpy as np
import pytest
import sentencepiece as spm

from moshi_mlx.tokenizer import TextTokenizer

SENTENCES = [
    "hello world this is moshi",
    "the quick brown fox jumps over the lazy dog",
    "speech models talk in real time",
    "a small test corpus for the tokenizer",
]


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> TextTokenizer:
    buf = io.BytesIO()
    # Same special ids as Moshi's tokenizer: 0 unk (EPAD in the text stream), 3 pad.
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SENTENCES * 5), model_writer=buf, vocab_size=40,
        unk_id=0, bos_id=1, eos_id=2, pad_id=3, minloglevel=2,
    )
    path = tmp_path_factory.mktemp("spm") / "tiny.model"
    path.write_bytes(buf.getvalue())
    return TextTokenizer(path)


def test_round_trip_and_vocab(tok):
    assert tok.vocab_size == 40
    ids = tok.encode("hello world the fox")
    assert all(0 <= i < 40 for i in ids)
    assert tok.decode(ids) == "hello world the fox"


def test_pieces_join_to_text_with_spaces(tok):
    ids = tok.encode("the lazy dog")
    pieces = [tok.piece(i) for i in ids]
    assert "".join(pieces) == " the lazy dog"
    assert all("\u2581" not in p for p in pieces)
    assert any(p.startswith(" ") for p in pieces)


def test_padding_and_unknown_ids_are_invisible(tok):
    ids = tok.encode("hello world")
    assert tok.piece(0) == "" and tok.piece(3) == "" and tok.piece(32000) == ""
    assert tok.piece(1) == "" and tok.piece(2) == ""  # <s>, </s>: control pieces
    noisy = [3, 3, 0] + ids[:2] + [3, 2, 0] + ids[2:] + [1, 3, 32000]
    assert tok.decode(noisy) == "hello world"
    assert tok.decode(np.array(noisy)) == "hello world"
    assert tok.decode(mx.array(noisy)) == "hello world"


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        TextTokenizer(tmp_path / "nope.model")

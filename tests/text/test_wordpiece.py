"""`tfkd.text.WordPieceTokenizer` against the Hugging Face tokenizer of the same checkpoint."""

import os

import numpy as np
import pytest

import tfkd


@pytest.fixture(scope="module")
def vocabulary():
    return os.path.join(tfkd.transfer.minilm_dir(), "vocab.txt")


@pytest.fixture(scope="module")
def tweets():
    return tfkd.datasets.load_tweets().train[0]


def _assert_matches_hugging_face(vocabulary, texts):
    from tokenizers import Tokenizer

    reference = Tokenizer.from_file(os.path.join(tfkd.transfer.minilm_dir(), "tokenizer.json"))
    reference.no_padding()
    reference.no_truncation()
    tokenizer = tfkd.text.WordPieceTokenizer(vocabulary)
    for text in texts:
        assert tokenizer.encode(text) == reference.encode(text).ids[1:-1], text


def test_matches_hugging_face_tokenizers_on_real_tweets(vocabulary, tweets):
    texts = tweets[:3000] + ["Café naïve ÉCOLE", "日本語 text", "a\u200bb\tc\x00d", "x" * 150]
    _assert_matches_hugging_face(vocabulary, texts)


@pytest.mark.slow
def test_matches_hugging_face_tokenizers_on_every_tweet(vocabulary):
    # The 37,243 distinct texts of the CSV's 38,158 rows (the rest repeat one of them).
    splits = tfkd.datasets.load_tweets()
    texts = splits.train[0] + splits.test[0]
    assert len(set(texts)) == len(texts) == 37_243
    _assert_matches_hugging_face(vocabulary, texts)


def test_pads_truncates_and_keeps_sep_last(vocabulary):
    tokenizer = tfkd.text.WordPieceTokenizer(vocabulary, sequence_length=6)
    ids = tokenizer(["hello", "one two three four five six seven"])
    assert ids.dtype == np.int32 and ids.shape == (2, 6)
    hello = tokenizer.vocabulary["hello"]
    np.testing.assert_array_equal(ids[0], [101, hello, 102, 0, 0, 0])
    assert ids[1, 0] == 101 and ids[1, -1] == 102 and (ids[1] != 0).all()


def test_unknown_words_and_word_pieces(vocabulary):
    tokenizer = tfkd.text.WordPieceTokenizer(vocabulary)
    assert tokenizer.encode("unaffable") == [
        tokenizer.vocabulary[p] for p in ("una", "##ffa", "##ble")
    ]
    assert tokenizer.encode("\u2603\u2603 \u2603") == [tokenizer.unk_id, tokenizer.unk_id]
    assert tokenizer.split_words("Hello, World!") == ["hello", ",", "world", "!"]


def test_rejects_bad_arguments(tmp_path, vocabulary):
    with pytest.raises(FileNotFoundError, match="vocabulary="):
        tfkd.text.WordPieceTokenizer(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="sequence_length=2"):
        tfkd.text.WordPieceTokenizer(vocabulary, sequence_length=2)
    with pytest.raises(ValueError, match=r"\[CLS\]"):
        tfkd.text.WordPieceTokenizer(["[PAD]", "[UNK]", "a"])
    with pytest.raises(TypeError, match="element 1"):
        tfkd.text.WordPieceTokenizer(vocabulary)(["ok", 3])

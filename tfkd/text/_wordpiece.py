"""BERT's uncased WordPiece tokenizer in pure Python: only the vocabulary file is needed.

It reproduces the Hugging Face `BertTokenizer` (and the `tokenizer.json` of BERT-style
checkpoints): clean, split off CJK characters, lowercase and strip accents, split on
whitespace and punctuation, then greedy longest-match-first WordPiece.
"""

import numbers
import os
import unicodedata

import numpy as np

_MAX_WORD_CHARS = 100


class WordPieceTokenizer:
    """Text -> padded int32 token ids `[CLS] ... [SEP] 0 0 ...` for BERT-style models.

    The student models of tfkd take these ids as their only input, so a `.tflite`
    export runs from a script that has this tokenizer (or any BERT WordPiece
    tokenizer) and the vocabulary file.

    Args:
        vocabulary: path of a `vocab.txt` (one token per line, id = line number), or a
            list of tokens.
        sequence_length: length of every output row; longer texts are truncated
            (keeping `[SEP]` last). Defaults to `64`.
        lowercase: lowercase and strip accents, for uncased models. Defaults to `True`.

    Raises:
        FileNotFoundError: no file at the `vocabulary` path.
        ValueError: a vocabulary without BERT's special tokens or not UTF-8, or a
            `sequence_length` below 3.
        TypeError: a `vocabulary`, `sequence_length` or `lowercase` of a wrong type.

    Example:

    ```python
    tokenizer = tfkd.text.WordPieceTokenizer("vocab.txt", sequence_length=64)
    ids = tokenizer(["@united thanks!", "worst flight ever"])   # (2, 64) int32
    ```
    """

    def __init__(self, vocabulary, sequence_length=64, lowercase=True):
        if not isinstance(sequence_length, numbers.Integral) or isinstance(sequence_length, bool):
            raise TypeError(
                "`sequence_length` must be an int >= 3. "
                f"Received: sequence_length={sequence_length!r}."
            )
        if sequence_length < 3:
            raise ValueError(
                f"`sequence_length` must be an int >= 3 ([CLS], a token, [SEP]). "
                f"Received: sequence_length={sequence_length!r}."
            )
        if not isinstance(lowercase, bool):
            raise TypeError(
                f"`lowercase` must be True or False. Received: lowercase={lowercase!r}."
            )
        tokens, received = _read_vocabulary(vocabulary)
        self.vocabulary = {token: index for index, token in enumerate(tokens)}
        missing = [t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]") if t not in self.vocabulary]
        if missing:
            raise ValueError(
                f"`vocabulary` lacks the special tokens {missing}; a BERT WordPiece vocabulary "
                f"has [PAD], [UNK], [CLS] and [SEP]. Received: vocabulary={received}."
            )
        sequence_length = int(sequence_length)
        self.sequence_length = sequence_length
        self.lowercase = lowercase
        self.pad_id = self.vocabulary["[PAD]"]
        self.unk_id = self.vocabulary["[UNK]"]
        self.cls_id = self.vocabulary["[CLS]"]
        self.sep_id = self.vocabulary["[SEP]"]

    @property
    def vocabulary_size(self):
        return len(self.vocabulary)

    def __call__(self, texts):
        """Token ids of `texts` (a string or a list of strings), shape (n, sequence_length)."""
        if isinstance(texts, str):
            texts = [texts]
        if isinstance(texts, np.ndarray) and texts.ndim != 1:
            raise ValueError(
                f"`texts` must be a string or a 1-D list of strings. Received: texts of shape "
                f"{texts.shape}."
            )
        if isinstance(texts, (bytes, dict)) or not (
            hasattr(texts, "__len__") and hasattr(texts, "__iter__")
        ):
            raise TypeError(
                "`texts` must be a string or a list of strings. Received: texts of type "
                f"{type(texts).__name__}."
            )
        ids = np.full((len(texts), self.sequence_length), self.pad_id, np.int32)
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(
                    f"`texts` must be strings. Received: element {row} of type "
                    f"{type(text).__name__}: {text!r}."
                )
            pieces = self.encode(text)[: self.sequence_length - 2]
            ids[row, : len(pieces) + 2] = [self.cls_id, *pieces, self.sep_id]
        return ids

    def encode(self, text):
        """WordPiece ids of one text, without special tokens or truncation."""
        ids = []
        for word in self.split_words(text):
            ids.extend(self._word_pieces(word))
        return ids

    def split_words(self, text):
        """BERT's basic tokenization: the words and punctuation marks of `text`."""
        text = _clean(text)
        if self.lowercase:
            text = unicodedata.normalize("NFD", text.lower())
            text = "".join(char for char in text if unicodedata.category(char) != "Mn")
        words = []
        for chunk in text.split():
            word = []
            for char in chunk:
                if _is_punctuation(char):
                    if word:
                        words.append("".join(word))
                        word = []
                    words.append(char)
                else:
                    word.append(char)
            if word:
                words.append("".join(word))
        return words

    def _word_pieces(self, word):
        if len(word) > _MAX_WORD_CHARS:
            return [self.unk_id]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocabulary:
                    pieces.append(self.vocabulary[piece])
                    break
                end -= 1
            if end == start:
                return [self.unk_id]
            start = end
        return pieces

    def __repr__(self):
        return (
            f"WordPieceTokenizer(vocabulary_size={self.vocabulary_size}, "
            f"sequence_length={self.sequence_length}, lowercase={self.lowercase})"
        )


def _read_vocabulary(vocabulary):
    """`(tokens, how the error messages show the argument)`."""
    if isinstance(vocabulary, (str, os.PathLike)):
        path = os.fspath(vocabulary)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"No vocabulary file at `vocabulary`. Received: vocabulary={path!r}."
            )
        try:
            with open(path, encoding="utf-8") as file:
                return [line.rstrip("\n") for line in file], repr(path)
        except UnicodeDecodeError as error:
            raise ValueError(
                f"The vocabulary file is not UTF-8 text ({error.reason} at byte "
                f"{error.start}). Received: vocabulary={path!r}."
            ) from error
    tokens = None
    if not isinstance(vocabulary, bytes) and hasattr(vocabulary, "__iter__"):
        tokens = list(vocabulary)
    if tokens is None or not all(isinstance(token, str) for token in tokens):
        raise TypeError(
            "`vocabulary` must be the path of a vocab.txt or a list of token strings. "
            f"Received: vocabulary={_short(vocabulary)} of type {type(vocabulary).__name__}."
        )
    return tokens, f"a list of {len(tokens)} tokens"


def _short(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _clean(text):
    """Drops control characters, maps whitespace to spaces and pads CJK characters."""
    out = []
    for char in text:
        code = ord(char)
        if code == 0 or code == 0xFFFD or _is_control(char):
            continue
        if _is_cjk(code):
            out.extend((" ", char, " "))
        elif char.isspace() or unicodedata.category(char) == "Zs":
            out.append(" ")
        else:
            out.append(char)
    return "".join(out)


def _is_control(char):
    if char in "\t\n\r":
        return False
    return unicodedata.category(char) in ("Cc", "Cf")


def _is_punctuation(char):
    code = ord(char)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def _is_cjk(code):
    return (
        0x4E00 <= code <= 0x9FFF
        or 0x3400 <= code <= 0x4DBF
        or 0x20000 <= code <= 0x2A6DF
        or 0x2A700 <= code <= 0x2B73F
        or 0x2B740 <= code <= 0x2B81F
        or 0x2B820 <= code <= 0x2CEAF
        or 0xF900 <= code <= 0xFAFF
        or 0x2F800 <= code <= 0x2FA1F
    )

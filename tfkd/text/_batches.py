"""Batches of token ids cut to their longest row: a BERT costs about 2x less per tweet."""

import math
import numbers

import keras
import numpy as np


class LengthBuckets(keras.utils.PyDataset):
    """Batches of padded token ids trimmed to the longest sequence in the batch.

    Rows are grouped by length (sorted, then cut into batches), so a batch of
    short texts runs a transformer on short sequences; batch order is shuffled
    each epoch when `shuffle`. Lengths are rounded up to a multiple of
    `length_multiple` to bound the number of shapes a compiled step sees.
    Only for models that ignore padding (e.g. a BERT with a padding mask).

    Args:
        token_ids: int array (n, sequence_length), padded with `pad_id`.
        labels: array (n,) or None (inputs only, for `predict`).
        batch_size: rows per batch. Defaults to `32`.
        shuffle: shuffle rows within equal lengths and the batch order every epoch.
            Defaults to `True`.
        seed: seed of the shuffling. Defaults to `0`.
        length_multiple: defaults to `8`.
        pad_id: defaults to `0`.

    Raises:
        ValueError: `token_ids` not 2-D, `labels` of another length, or a size or
            `seed` out of range.
        TypeError: `token_ids` that are not numbers, or a bad `shuffle` or `pad_id`.

    Example:

    ```python
    model.fit(tfkd.text.LengthBuckets(ids, labels, batch_size=32), epochs=2)
    ```
    """

    def __init__(
        self,
        token_ids,
        labels=None,
        batch_size=32,
        shuffle=True,
        seed=0,
        length_multiple=8,
        pad_id=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.token_ids = np.asarray(token_ids)
        if self.token_ids.ndim != 2:
            raise ValueError(
                "`token_ids` must be a 2-D array (examples, sequence_length). Received: "
                f"token_ids.shape={self.token_ids.shape}."
            )
        if self.token_ids.dtype.kind not in "iuf":
            raise TypeError(
                "`token_ids` must be integer token ids (e.g. from WordPieceTokenizer). "
                f"Received: token_ids of dtype {self.token_ids.dtype}."
            )
        self.labels = None if labels is None else np.asarray(labels)
        if self.labels is not None and len(self.labels) != len(self.token_ids):
            raise ValueError(
                f"`labels` must have one entry per row of `token_ids`. Received: "
                f"{len(self.labels)} labels for {len(self.token_ids)} rows."
            )
        _check_options(batch_size, shuffle, seed, length_multiple, pad_id)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.length_multiple = int(length_multiple)
        self.lengths = (self.token_ids != pad_id).sum(axis=1)
        self._rng = np.random.RandomState(seed)
        self._batches = self._make_batches()

    def __len__(self):
        return len(self._batches)

    def __getitem__(self, index):
        rows = self._batches[index]
        longest = max(int(self.lengths[rows].max()), 1)
        width = min(
            self.token_ids.shape[1],
            math.ceil(longest / self.length_multiple) * self.length_multiple,
        )
        ids = self.token_ids[rows, :width]
        return ids if self.labels is None else (ids, self.labels[rows])

    def on_epoch_end(self):
        if self.shuffle:
            self._batches = self._make_batches()

    def _make_batches(self):
        if self.shuffle:
            tiebreak = self._rng.permutation(len(self.lengths))
            order = np.lexsort((tiebreak, self.lengths))
        else:
            order = np.argsort(self.lengths, kind="stable")
        batches = [
            order[start : start + self.batch_size]
            for start in range(0, len(order), self.batch_size)
        ]
        if self.shuffle:
            batches = [batches[i] for i in self._rng.permutation(len(batches))]
        # Keras infers the TensorFlow input signature from the first few batches and
        # relaxes only the dimensions that differ among them: put the longest and the
        # shortest batch first, so the sequence dimension is seen to vary.
        if len(batches) > 1:
            widest = max(range(len(batches)), key=lambda i: self.lengths[batches[i]].max())
            batches.insert(0, batches.pop(widest))
            narrowest = min(range(1, len(batches)), key=lambda i: self.lengths[batches[i]].max())
            batches.insert(1, batches.pop(narrowest))
        return batches

    def predict_order(self):
        """The row order of `model.predict(self)`'s outputs (no shuffling only)."""
        if self.shuffle:
            raise ValueError("predict_order needs LengthBuckets(..., shuffle=False).")
        return np.concatenate(self._batches)


def _check_options(batch_size, shuffle, seed, length_multiple, pad_id):
    for value, name in ((batch_size, "batch_size"), (length_multiple, "length_multiple")):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
            raise ValueError(f"`{name}` must be a positive int. Received: {name}={value!r}.")
    if not isinstance(shuffle, bool):
        raise TypeError(f"`shuffle` must be True or False. Received: shuffle={shuffle!r}.")
    if seed is not None and (
        not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or not 0 <= seed < 2**32
    ):
        raise ValueError(f"`seed` must be an int in [0, 2**32) or None. Received: seed={seed!r}.")
    if not isinstance(pad_id, numbers.Integral) or isinstance(pad_id, bool):
        raise TypeError(f"`pad_id` must be the integer id of padding. Received: pad_id={pad_id!r}.")

"""`tfkd.text.LengthBuckets`: batches cut to their longest row, every row once per epoch."""

import numpy as np
import pytest

import tfkd


def _ids(lengths, width=32):
    ids = np.zeros((len(lengths), width), np.int32)
    for row, length in enumerate(lengths):
        ids[row, :length] = np.arange(1, length + 1)
    return ids


def test_batches_are_trimmed_and_cover_every_row():
    lengths = np.random.RandomState(0).randint(2, 33, size=100)
    ids, labels = _ids(lengths), np.arange(100)
    batches = tfkd.text.LengthBuckets(ids, labels, batch_size=16, seed=0)
    seen = []
    for index in range(len(batches)):
        x, y = batches[index]
        assert x.shape[1] % 8 == 0 and x.shape[1] >= lengths[y].max()
        np.testing.assert_array_equal(x, ids[y, : x.shape[1]])
        seen.extend(y)
    assert sorted(seen) == list(range(100))
    widths = [batches[i][0].shape[1] for i in range(len(batches))]
    assert widths[0] == max(widths) and widths[1] == min(widths)  # Keras sees the length vary
    before = [list(batches[i][1]) for i in range(len(batches))]
    batches.on_epoch_end()
    after = [list(batches[i][1]) for i in range(len(batches))]
    assert after != before and sorted(sum(after, [])) == list(range(100))


def test_predict_order_restores_input_order():
    lengths = [5, 30, 2, 17, 9, 25, 3]
    batches = tfkd.text.LengthBuckets(_ids(lengths), batch_size=3, shuffle=False)
    outputs = np.concatenate([(batches[i] != 0).sum(axis=1) for i in range(len(batches))])
    restored = np.empty_like(outputs)
    restored[batches.predict_order()] = outputs
    np.testing.assert_array_equal(restored, lengths)
    with pytest.raises(ValueError, match="shuffle=False"):
        tfkd.text.LengthBuckets(_ids(lengths)).predict_order()


def test_rejects_bad_inputs():
    with pytest.raises(ValueError, match="2-D"):
        tfkd.text.LengthBuckets(np.zeros(4, np.int32))
    with pytest.raises(ValueError, match="3 labels for 4 rows"):
        tfkd.text.LengthBuckets(np.zeros((4, 8), np.int32), np.zeros(3))

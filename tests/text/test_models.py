"""`tfkd.text.conv_classifier`: learns real tweets, exports to an all-builtin int8 `.tflite`."""

import os

import keras
import pytest

import tfkd
from tests.helpers import assert_tflite_agrees

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="TFLite export needs the TensorFlow backend"
)


@pytest.fixture(scope="module")
def tweets():
    data = tfkd.datasets.load_tweets()
    tokenizer = tfkd.text.WordPieceTokenizer(
        os.path.join(tfkd.transfer.minilm_dir(), "vocab.txt"), sequence_length=48
    )
    return (
        tokenizer(data.train[0][:4000]),
        data.train[1][:4000],
        tokenizer(data.test[0][:600]),
        data.test[1][:600],
        tokenizer,
    )


def test_learns_tweets_and_exports_int8_and_qat(tweets, tmp_path):
    x, y, x_test, y_test, tokenizer = tweets
    model = tfkd.text.conv_classifier(
        tokenizer.vocabulary_size, 3, sequence_length=48, embedding_dim=32, filters=64
    )
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=64, epochs=3, verbose=0)
    accuracy = model.evaluate(x_test, y_test, verbose=0)[1]
    assert accuracy > 0.55  # the majority class is 0.43

    report = tfkd.export_tflite(
        model, tmp_path / "int8.tflite", quantization="int8", representative_data=x[:256]
    )
    assert report.float_ops == [] and any(op.startswith("GATHER") for op in report.ops)
    lite = tfkd.TFLiteModel(tmp_path / "int8.tflite")
    assert lite.input_dtype == "int32"
    # top1 is a least fraction: 0.951 is "more than 0.95" on the 600 test tweets.
    assert_tflite_agrees(model, lite, x_test, tolerance=None, top1=0.951)
    assert lite.evaluate(x_test, y_test)["accuracy"] > accuracy - 0.03
    assert report.bytes < 0.3 * model.count_params() * 4

    qat = tfkd.quantize.quantize_aware(model)
    qat.compile(
        optimizer=keras.optimizers.Adam(1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    qat.fit(x, y, batch_size=64, epochs=1, verbose=0)
    report = tfkd.export_tflite(
        qat, tmp_path / "qat.tflite", quantization="int8", representative_data=x[:64]
    )
    assert report.float_ops == []
    assert_tflite_agrees(qat, tmp_path / "qat.tflite", x_test, tolerance=None, top1=0.971)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="vocabulary_size=0"):
        tfkd.text.conv_classifier(0, 3)
    with pytest.raises(ValueError, match="dropout=1.0"):
        tfkd.text.conv_classifier(100, 3, dropout=1.0)

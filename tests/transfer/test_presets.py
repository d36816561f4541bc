"""keras-hub preset folders (issue 18): a backbone to fine-tune or a classifier to teach,
loaded offline, and a hostile folder refused before keras-hub reads it."""

import json

import keras
import keras_hub
import numpy as np
import pytest

import tfkd

VOCABULARY = 30522  # MiniLM's: the tweets' token ids index it


def tiny_bert():
    keras.utils.set_random_seed(0)
    return keras_hub.models.BertBackbone(
        vocabulary_size=VOCABULARY,
        num_layers=1,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=64,
    )


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
    """`(backbone folder, classifier folder, the classifier)` of a tiny BERT."""
    folder = tmp_path_factory.mktemp("presets")
    backbone = tiny_bert()
    backbone.save_to_preset(str(folder / "backbone"))
    classifier = keras_hub.models.BertTextClassifier(backbone, 3, preprocessor=None)
    classifier.save_to_preset(str(folder / "classifier"))
    return folder / "backbone", folder / "classifier", classifier


def _ids(rows=4, length=12):
    ids = np.random.default_rng(0).integers(1000, 2000, (rows, length)).astype("int32")
    ids[:, 0], ids[:, -3], ids[:, -2:] = 101, 102, 0  # [CLS] ... [SEP] [PAD] [PAD]
    return ids


def test_a_backbone_preset_loads_with_its_weights(presets):
    backbone = tfkd.transfer.load_preset(presets[0])
    assert isinstance(backbone, keras_hub.models.BertBackbone)
    for loaded, saved in zip(backbone.weights, tiny_bert().weights):
        np.testing.assert_array_equal(np.asarray(loaded), np.asarray(saved))
    also = tfkd.transfer.load_preset(presets[1], backbone=True)
    assert isinstance(also, keras_hub.models.BertBackbone)


def test_a_classifier_preset_takes_token_ids_and_computes_what_it_computed(presets):
    model = tfkd.transfer.load_preset(presets[1])
    ids = _ids()
    expected = presets[2](
        {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": ids != 0}
    )
    np.testing.assert_allclose(model.predict(ids, verbose=0), expected, atol=1e-5)
    assert model.input.shape == (None, None) and model.output.shape == (None, 3)


def test_a_hostile_or_broken_preset_is_refused_before_keras_hub_reads_it(presets, tmp_path):
    folder = tmp_path / "hostile"
    folder.mkdir()
    config = json.loads((presets[0] / "config.json").read_text())
    config["config"]["dtype"] = {"module": "os", "class_name": "system", "config": {}}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"outside Keras and keras-hub \(\['os'\]\)"):
        tfkd.transfer.load_preset(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json that is not JSON"):
        tfkd.transfer.load_preset(folder)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        tfkd.transfer.load_preset(tmp_path / "nowhere")

"""Texts in CSV files through the pipeline (issue 18): tokenized by the teacher's
vocabulary, unlabelled rows taught by the teacher, the int8 `.tflite` exported with the
tokenizer's files beside it and run by a script that has LiteRT only."""

import importlib.util
import json
import pathlib

import numpy as np
import pytest

import tfkd
from tfkd.pipeline import ConfigError, Data, run_config

REPO = pathlib.Path(__file__).resolve().parents[2]
TRAIN_SIZE, TEST_SIZE = 400, 300  # labelled (and as many unlabelled) tweets; test tweets
STAGES = """\
stages:
  - {stage: train, name: teacher, model: {architecture: text_cnn}, epochs: 4, batch_size: 32}
  - stage: distill
    name: student
    teacher: teacher
    student: {architecture: text_cnn, embedding_dim: 16, filters: 32, hidden_units: 0}
    epochs: 4
    batch_size: 32
  - {stage: export, name: int8, quantization: int8}
"""


def _example(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tweets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("texts") / "tweets"
    counts = _example("write_tweets_csv").write(folder, TRAIN_SIZE, TEST_SIZE)
    assert counts == {"train.csv": 2 * TRAIN_SIZE, "test.csv": TEST_SIZE}
    return folder


def test_texts_are_tokenized_by_the_vocabulary_with_empty_labels_unlabelled(tweets):
    data = Data.load(csv=tweets, text="text", label="label", sequence_length=48)
    split = tfkd.datasets.load_tweets(unlabeled_fraction=0.5, seed=0)
    tokenizer = tfkd.text.WordPieceTokenizer(
        pathlib.Path(tfkd.transfer.minilm_dir()) / "vocab.txt", sequence_length=48
    )
    texts = split.train[0][:TRAIN_SIZE] + split.unlabeled[:TRAIN_SIZE]
    np.testing.assert_array_equal(data.x_train, tokenizer(texts))
    np.testing.assert_array_equal(data.y_train[:TRAIN_SIZE], split.train[1][:TRAIN_SIZE])
    assert (data.y_train[TRAIN_SIZE:] == tfkd.distill.UNLABELED).all()
    np.testing.assert_array_equal(data.y_test, split.test[1][:TEST_SIZE])
    assert data.class_names == ["negative", "neutral", "positive"]
    assert data.describe()["labelled_examples"] == TRAIN_SIZE
    assert data.x_train.dtype == np.int32 and data.input_shape == (48,)


def test_one_file_is_split_by_class_and_unlabelled_rows_stay_in_training(tmp_path):
    rows = ["text,label"] + [f"text {i},{'ab'[i % 2] if i < 40 else ''}" for i in range(60)]
    (tmp_path / "all.csv").write_text("\n".join(rows) + "\n")
    (x, y), (test_texts, test_y), names = tfkd.datasets.load_csv(
        tmp_path / "all.csv", test_split=0.25, seed=3
    )
    assert names == ["a", "b"] and np.bincount(test_y).tolist() == [5, 5]
    assert len(x) == 50 and (y == -1).sum() == 20
    assert not set(test_texts) & set(x)
    again = tfkd.datasets.load_csv(tmp_path / "all.csv", test_split=0.25, seed=3)
    assert again[1][0] == test_texts


def test_labels_that_are_numbers_are_class_ids_in_numerical_order(tmp_path):
    # Before: ordered as text, labels 0 to 11 were class ids 0, 1, 10, 11, 2, ...: a
    # model's output 2 meant label 10.
    rows = ["text,label"] + [f"text {i},{i % 12}" for i in range(48)]
    (tmp_path / "numbers.csv").write_text("\n".join(rows) + "\n")
    (x, y), _, names = tfkd.datasets.load_csv(tmp_path / "numbers.csv", test_split=0.25)
    assert names == [str(label) for label in range(12)]
    assert all(int(text.split()[1]) % 12 == label for text, label in zip(x, y))
    rows = ["text,label"] + [f"text {i},{['b', 'a', 'c1'][i % 3]}" for i in range(12)]
    (tmp_path / "words.csv").write_text("\n".join(rows) + "\n")
    assert tfkd.datasets.load_csv(tmp_path / "words.csv", test_split=0.25)[2] == ["a", "b", "c1"]
    labels = ["2", "\u00b2", "--5"]  # not all whole numbers: as text
    rows = ["text,label"] + [f"text {i},{labels[i % 3]}" for i in range(12)]
    (tmp_path / "digits.csv").write_text("\n".join(rows) + "\n")
    names = tfkd.datasets.load_csv(tmp_path / "digits.csv", test_split=0.25)[2]
    assert names == sorted(labels)


def test_a_label_of_minus_one_is_a_class_with_a_warning(tmp_path):
    # -1 is UNLABELED in arrays, but a class in sentiment's -1, 0, 1: it stays a class, and
    # the warning says so and how to leave a row unlabelled (before: no word).
    rows = ["text,label"] + [f"text {i},{[-1, 0, 1][i % 3]}" for i in range(12)]
    (tmp_path / "sentiment.csv").write_text("\n".join(rows) + "\n")
    with pytest.warns(UserWarning, match="'-1' in .* is read as a class, class id 0 .*empty"):
        (x, y), _, names = tfkd.datasets.load_csv(tmp_path / "sentiment.csv", test_split=0.25)
    assert names == ["-1", "0", "1"] and np.bincount(y).tolist() == [3, 3, 3]


def test_excel_s_byte_order_mark_and_another_encoding_read_as_their_texts(tmp_path):
    # Before: a file saved as Excel's "CSV UTF-8" (a byte-order mark first) was refused,
    # "the header lacks the column(s) ['text']. Received: columns ['\ufefftext', 'label']",
    # and the pipeline's `csv:` took no `encoding`.
    rows = ["text,label"] + [f"caf\u00e9 {i},{'ab'[i % 2]}" for i in range(40)]
    files = {"bom.csv": "utf-8-sig", "latin.csv": "latin-1"}
    for name, encoding in files.items():
        (tmp_path / name).write_text("\n".join(rows) + "\n", encoding=encoding)
    (x, y), _, names = tfkd.datasets.load_csv(tmp_path / "bom.csv", test_split=0.25)
    assert names == ["a", "b"] and len(x) == 30 and all(t.startswith("caf\u00e9 ") for t in x)
    latin = Data.load(csv=tmp_path / "latin.csv", test_split=0.25, encoding="latin-1")
    utf_8 = Data.load(csv=tmp_path / "bom.csv", test_split=0.25)
    np.testing.assert_array_equal(latin.x_train, utf_8.x_train)
    with pytest.raises(ValueError, match="not a readable utf-8 CSV file"):
        Data.load(csv=tmp_path / "latin.csv", test_split=0.25)
    with pytest.raises(ValueError, match="Unknown encoding. Received: encoding='klingon'"):
        Data.load(csv=tmp_path / "latin.csv", test_split=0.25, encoding="klingon")


def test_a_new_vocabulary_changes_the_data_fingerprint_that_stages_rerun_on(tmp_path):
    # Before: the data's fingerprint read only its arrays and classes. A vocabulary with
    # 500 more tokens gave the same ids to the same texts, so a text model sized for the
    # old one was reused, and the export wrote the new vocabulary beside it.
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "good", "bad"]
    small, large = tmp_path / "small.txt", tmp_path / "large.txt"
    small.write_text("\n".join(tokens) + "\n")
    large.write_text("\n".join(tokens + [f"word{i}" for i in range(500)]) + "\n")
    texts = ["good", "bad", "good bad", "bad good"]

    def data(vocabulary, sequence_length=8, lowercase=True):
        tokenizer = tfkd.text.WordPieceTokenizer(vocabulary, sequence_length, lowercase)
        ids = tokenizer(texts)
        labels = np.array([0, 1, 0, 1])
        return Data(ids, labels, ids, labels, name="texts", tokenizer=tokenizer), ids

    (first, ids), (second, same_ids) = data(small), data(large)
    np.testing.assert_array_equal(ids, same_ids)
    assert first.fingerprint != second.fingerprint
    assert first.fingerprint == data(small)[0].fingerprint
    assert first.fingerprint != data(small, lowercase=False)[0].fingerprint


def test_a_text_config_trains_distils_and_exports_with_the_tokenizer_files(tweets, tmp_path):
    config = tmp_path / "tweets.yaml"
    config.write_text(f"data: {{csv: {tweets}, text: text, label: label}}\nseed: 0\n" + STAGES)
    report = run_config(config, tmp_path / "run", tensorboard=False, log=lambda _: None)
    rows = {row["name"]: row for row in report.rows}
    majority = np.bincount(Data.load(csv=tweets).y_test).max() / TEST_SIZE
    assert rows["teacher"]["accuracy"] > majority + 0.02
    assert rows["int8"]["accuracy"] > majority
    folder = tmp_path / "run" / "stages" / "int8"
    assert sorted(path.name for path in folder.iterdir() if path.name != "entry.json") == [
        "model.tflite",
        "tokenizer.json",
        "vocab.txt",
        "wordpiece.py",
    ]
    settings = json.loads((folder / "tokenizer.json").read_text())
    assert settings["sequence_length"] == 64 and settings["class_names"][0] == "negative"
    vocabulary = pathlib.Path(tfkd.transfer.minilm_dir()) / "vocab.txt"
    assert (folder / "vocab.txt").read_bytes() == vocabulary.read_bytes()
    # The script that has LiteRT and the files beside the .tflite only: the same predictions
    # as tfkd.TFLiteModel, hence the report's accuracy.
    script = _example("tweets_tflite_predict")
    classifier = script.TweetClassifier(folder / "model.tflite", folder / "vocab.txt")
    texts, labels = tfkd.datasets.load_csv(tweets)[1]
    predicted = np.argmax(classifier.logits(texts), -1)
    lite = tfkd.TFLiteModel(folder / "model.tflite")
    np.testing.assert_array_equal(predicted, lite.predict(Data.load(csv=tweets).x_test).argmax(-1))
    assert np.mean(predicted == labels) == pytest.approx(rows["int8"]["accuracy"], abs=5e-5)
    assert classifier.predict(texts[:1])[0][0] in settings["class_names"]


def test_a_never_called_sequential_text_model_trains_and_exports(tweets, tmp_path):
    import keras

    data = Data.load(csv=tweets, sequence_length=32)
    model = keras.Sequential(  # as users write it: no Input, never called
        [
            keras.layers.Embedding(data.tokenizer.vocabulary_size, 16),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(3),
        ]
    )
    stages = [
        tfkd.pipeline.Train(model, epochs=6, batch_size=32, learning_rate=0.01, name="bag"),
        tfkd.pipeline.Export(quantization="int8", name="int8"),
        tfkd.pipeline.Export(recipe="dynamic_int8", from_stage="bag", name="litert"),
    ]
    report = tfkd.Pipeline(stages).execute(
        data, tmp_path / "run", tensorboard=False, verbose=0, log=lambda _: None
    )
    rows = {row["name"]: row for row in report.rows}
    majority = np.bincount(data.y_test).max() / TEST_SIZE
    assert rows["bag"]["accuracy"] > majority and rows["int8"]["accuracy"] > majority
    assert abs(rows["int8"]["accuracy"] - rows["bag"]["accuracy"]) < 0.05
    assert not model.built  # the stage trained a copy
    # The tokenizer's files go beside every exported file, the LiteRT quantizer's too.
    for name in ("int8", "litert"):
        folder = tmp_path / "run" / "stages" / name
        assert (folder / "vocab.txt").is_file() and (folder / "tokenizer.json").is_file()


def test_text_and_image_models_are_refused_for_the_other_kind_of_data(tweets, tmp_path):
    def error(stages, data=f"{{csv: {tweets}}}"):
        config = tmp_path / "bad.yaml"
        config.write_text(f"data: {data}\nstages:\n{stages}")
        with pytest.raises(ConfigError) as raised:
            run_config(config, tmp_path / "run", tensorboard=False, log=lambda _: None)
        assert not (tmp_path / "run" / "stages").exists()  # refused before any work
        return str(raised.value)

    message = error("  - {stage: train, model: {architecture: cnn}}\n")
    assert "bad.yaml:3: stages[0].model: Architecture 'cnn' takes images, and the data are " in (
        message
    )
    message = error("  - {stage: transfer, backbone: minilm, image_size: 128}\n")
    assert "stages[0].image_size: `image_size` is the size images are resized to" in message
    message = error("  - {stage: transfer, backbone: minilm}\n", "fashion_mnist")
    assert "stages[0].backbone: The backbone 'minilm' takes token ids" in message
    message = error("  - {stage: train, model: {application: MobileNetV3Small}}\n")
    assert "stages[0].model: keras.applications models take images of shape" in message
    assert "the data are token ids of shape (64,)" in message
    message = error("  - {stage: train, model: {architecture: text_cnn}}\n", "fashion_mnist")
    assert "Architecture 'text_cnn' takes token ids, and the data are images" in message
    message = error(
        "  - {stage: train, model: {architecture: text_cnn}, augmentation: {flip: true}}\n"
    )
    assert "`augmentation` applies to images" in message
    teacher = "  - {stage: train, name: t, model: {architecture: text_cnn}}\n"
    message = error(teacher + "  - {stage: distill, teacher: t, mixup: 0.2}\n")
    assert "stages[1].mixup: `mixup` blends the values of two examples" in message
    assert "dtype int32, shape (64,)" in message and "Received: mixup=0.2" in message
    message = error(teacher + "  - {stage: distill, teacher: t, cutmix: 1.0}\n")
    assert "stages[1].cutmix: `cutmix` pastes a box of one image" in message
    message = error(teacher + "  - {stage: distill, teacher: t, augmented_copies: 2}\n")
    assert "stages[1].augmented_copies: `augmented_copies` adds shifted and flipped" in message
    assert "Received: augmented_copies=2 for inputs of shape (64,)" in message
    message = error("  - {stage: export}\n", f"{{csv: {tweets}, sequence_length: 2}}")
    assert "data.sequence_length: `sequence_length` must be an integer >= 3" in message
    message = error("  - {stage: export}\n", f"{{csv: {tweets}, vocabulary: none.txt}}")
    assert "data.vocabulary: File not found" in message


def test_transfer_on_texts_on_several_processes_is_refused_before_any_stage_runs(
    tweets, tmp_path, monkeypatch
):
    from tfkd.pipeline import _processes

    # As process 0 of 2 sees it once joined; nothing here needs the other process.
    monkeypatch.setattr(_processes, "_current", _processes.Processes("", 2, 0))
    config = tmp_path / "text.yaml"
    train = "  - {stage: train, model: {architecture: text_cnn}, epochs: 1}\n"
    config.write_text(
        f"data: {{csv: {tweets}}}\nstages:\n{train}  - {{stage: transfer, backbone: minilm}}\n"
    )
    with pytest.raises(ConfigError, match=r"text.yaml:4: stages\[1\].backbone: Stage 'transfer'"):
        run_config(config, tmp_path / "run", tensorboard=False, log=lambda _: None)
    assert not (tmp_path / "run" / "stages").exists()  # the train stage before it did not run


def test_keras_hub_presets_as_backbone_teacher_and_model(tweets, tmp_path):
    import keras_hub

    from tests.transfer.test_presets import tiny_bert

    backbone = tiny_bert()
    backbone.save_to_preset(str(tmp_path / "backbone"))
    classifier = keras_hub.models.BertTextClassifier(backbone, 3, preprocessor=None)
    classifier.save_to_preset(str(tmp_path / "classifier"))
    config = tmp_path / "presets.yaml"
    config.write_text(
        f"data: {{csv: {tweets}, sequence_length: 32}}\nseed: 0\nstages:\n"
        "  - {stage: transfer, name: tuned, backbone: {preset: backbone}, head_epochs: 0,\n"
        "     fine_tune_epochs: 2, fine_tune_learning_rate: 1.0e-3, batch_size: 32}\n"
        "  - {stage: load, name: given, path: classifier}\n"
        "  - {stage: train, name: trained, model: {preset: classifier}, epochs: 1}\n"
        "  - {stage: distill, name: student, teacher: tuned, epochs: 4, batch_size: 32,\n"
        "     student: {architecture: text_cnn, embedding_dim: 16, filters: 32}}\n"
        "  - {stage: export, name: tuned_int8, from_stage: tuned, quantization: int8}\n"
    )
    report = run_config(config, tmp_path / "run", tensorboard=False, log=lambda _: None)
    rows = {row["name"]: row for row in report.rows}
    assert rows["given"]["parameters"] == classifier.count_params() == rows["trained"]["parameters"]
    assert rows["tuned"]["parameters"] == backbone.count_params() + 16 * 3 + 3
    majority = np.bincount(Data.load(csv=tweets).y_test).max() / TEST_SIZE
    assert rows["tuned"]["accuracy"] > majority and rows["student"]["accuracy"] > majority
    # The fine-tuned BERT takes texts of any length (its batches were cut to their longest
    # text): its int8 file is timed on a test example, not on zeros of an open shape.
    assert abs(rows["tuned_int8"]["accuracy"] - rows["tuned"]["accuracy"]) < 0.05
    lite = tfkd.TFLiteModel(tmp_path / "run" / "stages" / "tuned_int8" / "model.tflite")
    with pytest.raises(ValueError, match=r"`sample` is needed.*\[None, -1\]"):
        lite.benchmark(num_runs=1)
    lines = []
    again = run_config(config, tmp_path / "run", tensorboard=False, log=lines.append)
    assert [row["accuracy"] for row in again.rows] == [row["accuracy"] for row in report.rows]
    assert sum("finished earlier, reused" in line for line in lines) == 5


@pytest.mark.slow  # `bash scripts/test.sh -m slow`: MiniLM fine-tuned, minutes on 2 cores
def test_minilm_fine_tuned_by_the_transfer_stage_teaches_a_text_student(tweets, tmp_path):
    """The tweets config's chain on 400 labelled tweets (the full run is BENCHMARKS.md's).

    Its two fine-tuning epochs stay: after one, the teacher (0.5667) was so little above the
    majority class (0.44) that two epochs of distillation left the student there, and every
    stage after it at 0.44. Two fine-tuning epochs and four of training: teacher 0.6433,
    distilled 0.5100, int8 0.5133."""
    text = (REPO / "examples" / "pipeline_tweets.yaml").read_text()
    config = tmp_path / "tweets.yaml"
    config.write_text(
        text.replace("../data/tweets_csv", str(tweets)).replace("epochs: 6", "epochs: 4")
    )
    report = run_config(config, tmp_path / "run", tensorboard=False, log=lambda _: None)
    rows = {row["name"]: row for row in report.rows}
    majority = np.bincount(Data.load(csv=tweets).y_test).max() / TEST_SIZE
    assert rows["teacher"]["parameters"] > 22_000_000
    assert rows["teacher"]["accuracy"] > majority + 0.05
    assert rows["int8"]["accuracy"] > majority

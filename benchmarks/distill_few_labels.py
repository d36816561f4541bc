"""Few labels on Fashion-MNIST: distilling with the unlabelled images (issue 15, item 1).

Per seed, 100 labels per class are kept (seeded, stratified); the other 59,000
training images keep their pixels but lose their labels. Then:

1. teacher: torchvision's ImageNet MobileNetV2 (`tfkd.transfer.pretrained_mobilenet_v2`)
   fine-tuned by `tfkd.transfer.fine_tune` on the 1,000 labelled images only
   (28x28x1 resized to `--image-size` inside the model, torchvision normalization,
   random shifts and horizontal flips; `--teacher-schedule cosine` decays the
   fine-tuning learning rate to 0 instead of keeping it constant; `--teachers N`
   fine-tunes N of them on the same labels from different seeds, and the teacher is
   their softened average, `tfkd.distill.teacher_ensemble`);
2. student: the default pipeline's CNN (`tfkd.models.cnn`, filters
   24/48/96, dense 128, dropout 0.3; 164,738 parameters), trained
   - on the 1,000 labels alone (`scratch`, with and without the same augmentation;
     the better of the two is the baseline), and
   - by `tfkd.Distiller` on all 60,000 images, the hidden labels being
     `tfkd.distill.UNLABELED`: cross-entropy on the labelled examples, distillation
     on all, from cached teacher logits (`predict_teacher(..., cache=...)`)
     (`distilled`), and
   - the same way from two teachers (`distilled_two_teachers`): the softened
     average (`tfkd.distill.softened_average`, equal weights, at the distillation
     temperature) of the MobileNetV2 teacher's cached logits and the logits of the
     `scratch` baseline student (the better of augmented and plain), computed once;
   (`--skip-two-teachers` leaves this arm out; `--teachers-only` stops after the teacher);
   - with `--self-train-per-class K` (`distilled_self_trained`): self-training. The
     teacher and the `distilled` student together pseudo-label the K unlabelled images
     per class they are surest of; the fine-tuned teacher trains on for
     `--self-train-epochs` on the labelled and pseudo-labelled images
     (`teacher_self_trained`), and a fresh student is distilled from it as above. With
     `--self-train-soft` instead, a copy of the teacher is distilled on all 60,000
     images from the softened average of itself and the distilled student. No hidden
     label is used (`pseudo_label_accuracy` is a diagnostic);
   - with `--self-train-rounds K`, self-training is repeated, round k from round
     k-1's teacher and student (`distilled_self_trained_roundk`);
   - with `--pair-student`, each round also distils a fresh student from the softened
     average of the round's teacher and its student (`distilled_pair(_roundk)`): the
     next round's target, with no further teacher trained;
   - with `--noisy-student`, the students' distillation images are augmented anew
     each epoch (the labelled images' shifts and flips) while the cached teacher
     outputs stay those of the clean images (Noisy Student, Xie et al., CVPR 2020);
   - with `--consistent-copies K` (`distilled_consistent`): a fresh student distilled
     from the last teacher (the last self-training round's, else the fine-tuned one) on
     the training images and K fixed shifted and flipped copies of each
     (`tfkd.pipeline.data.shifted_copies`, as the pipeline's `augmented_copies`), the
     teacher's outputs computed on each copy, so the teacher and the student see the
     same image (consistent teaching, Beyer et al., CVPR 2022, with the teacher's
     outputs cached); a copy keeps its image's label or its being unlabelled;
   - with `--label-propagation` (`distilled_propagated`): a fresh student distilled from
     labels propagated from the 1,000 labelled images along a graph of the last teacher's
     pooled features on the training images (`tfkd.distill.propagate_labels`, its
     defaults: 10 neighbours, alpha 0.9), in place of the teacher's outputs;
   - with `--propagated-teacher` besides (`distilled_teacher_propagated`): one more soft
     self-training round whose teacher (`teacher_propagated`, a copy of the last one)
     learns from those propagated labels, then a fresh student distilled from the
     equal-weight average of its softmax and the labels propagated anew over its features;
3. the distilled students exported to a full-integer `.tflite`
   (`tfkd.export_tflite(..., quantization="int8")`) and scored by `tfkd.TFLiteModel`.

Every accuracy is on the full 10,000 test images. TensorFlow backend, CPU, 2 shared
cores: about 11 minutes a seed with no option (670 s for seed 0 in BENCHMARKS.md); each
option trains more models, and the full recipe of BENCHMARKS.md's latest few-labels
table (two soft self-training rounds, `--label-propagation --propagated-teacher`) trains
for about 90 to 120 minutes a seed when no model is saved (the parts its JSON records: 5,362
to 7,062 s). `--smoke` runs tiny sizes in about a minute.

    python benchmarks/distill_few_labels.py --seeds 0 1 2
    python benchmarks/distill_few_labels.py --smoke

A rerun with the same `--output` and settings reuses the seeds it already holds, so
`--seeds 0` then `--seeds 0 1 2` runs each seed once. Every model of a seed but the
control arms (`distilled_clean`, `distilled_two_teachers`) is also saved in
`--models-dir` (default: in the temporary directory), under a key of the settings that
train it (for a distilled student, also of its teacher's logits and the hidden labels),
and loaded from there when present, so a rerun that must redo a seed (say, after a new
arm or one more self-training round) trains only what changed; a seed lists what it
loaded in `"reused_models"`, and
its `"seconds"` then gives those models' original training time. `"seconds"` in the
JSON is the last invocation's wall time; each seed records its own parts.
"""

import argparse
import hashlib
import json
import math
import os
import pathlib
import statistics
import sys
import tempfile
import time

import keras
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from provenance import git_commit, machine  # noqa: E402

import tfkd  # noqa: E402
from tfkd.pipeline.data import shifted_copies  # noqa: E402

NUM_CLASSES = 10
STUDENT = {"filters": (24, 48, 96), "dense_units": 128, "dropout": 0.3}
STRONG = (
    "also RandomZoom(0.1, fill_mode='constant') + RandomErasing(factor=0.5, scale=(0.02, 0.25), "
    "value_range=(0, 255)), for the teacher and the augmented scratch student"
)
NOISY = (
    "the students' distillation images are augmented anew each epoch (tf.data) as the labelled "
    "images are, the cached teacher outputs staying those of the clean images (Noisy Student, "
    "Xie et al., CVPR 2020); the self-distilled teacher trains on clean images; control: "
    "distilled_clean, the first student distilled on the clean images"
)
TARGETS = {"gain_over_scratch": 0.03, "gap_to_teacher": 0.01, "int8_drop": 0.005}
START = time.perf_counter()


def log(message):
    print(f"[{time.perf_counter() - START:7.1f} s] {message}", flush=True)


def load_data(smoke):
    (x_train, y_train), (x_test, y_test) = tfkd.datasets.load("fashion_mnist")
    x_train, x_test = x_train[..., None], x_test[..., None]
    if smoke:
        x_train, y_train, x_test, y_test = (
            x_train[:3000],
            y_train[:3000],
            x_test[:500],
            y_test[:500],
        )
    return (x_train, y_train.astype("int64")), (x_test, y_test.astype("int64"))


def hide_labels(y_train, per_class, seed):
    """Keeps `per_class` labels of each class (seeded); the others become UNLABELED."""
    rng = np.random.default_rng(seed)
    keep = np.concatenate(
        [rng.choice(np.flatnonzero(y_train == c), per_class, replace=False) for c in range(10)]
    )
    hidden = np.full_like(y_train, tfkd.distill.UNLABELED)
    hidden[keep] = y_train[keep]
    return np.sort(keep), hidden


def augmentation(seed, strong=False):
    """Light augmentation for the labelled images: shifts of up to 10% and horizontal flips.
    `strong` adds zooms of up to 10% and, on half the images, a random-noise rectangle of 2%
    to 25% of the image (random erasing)."""
    layers = [
        keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=seed),
        keras.layers.RandomFlip("horizontal", seed=seed + 1),
    ]
    if strong:
        layers += [
            keras.layers.RandomZoom(0.1, fill_mode="constant", seed=seed + 2),
            keras.layers.RandomErasing(
                factor=0.5, scale=(0.02, 0.25), value_range=(0, 255), seed=seed + 3
            ),
        ]
    return keras.Sequential(layers, name="augmentation")


def labelled_batches(x, y, batch_size, seed, augment, strong=False):
    """A tf.data pipeline over the labelled images, reshuffled (and re-augmented) each epoch."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((x.astype("float32"), y))
    dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    if augment:
        layers = augmentation(seed, strong)
        dataset = dataset.map(lambda images, labels: (layers(images, training=True), labels))
    return dataset.prefetch(2)


def predict(model, x):
    return model.predict(x.astype("float32"), batch_size=512, verbose=0)


def accuracy(model, x, y, logits=None):
    logits = predict(model, x) if logits is None else logits
    return float(np.mean(logits.argmax(-1) == y))


def average_of_two(teacher_logits, scratch_logits, temperature):
    """Equal-weight softened average of the two teachers' logits, as numpy."""
    averaged = tfkd.distill.softened_average(
        [teacher_logits, scratch_logits], [0.5, 0.5], temperature=temperature
    )
    return keras.ops.convert_to_numpy(averaged)


def model_key(args, part):
    """A short hash of what trains `part` ("teacher" or "scratch"): a saved model is reused
    only by a run that would train it the same way."""
    current = settings(args)
    trained_by = {
        "smoke": args.smoke,
        "labelled_per_class": args.labelled_per_class,
        part: current[part],
        "student": current["student"] if part in ("scratch", "distill") else None,
    }
    if part == "self_train":  # from the teacher and the pseudo-labels of the distilled student
        trained_by |= {"teacher": current["teacher"], "distill": current["distill"]}
        # Round k's teacher is saved under its own name; the count of rounds is no part of
        # how round 1 trains.
        trained_by[part] = {k: v for k, v in current[part].items() if k != "rounds"}
    return hashlib.sha256(json.dumps(trained_by, sort_keys=True).encode()).hexdigest()[:12]


def saved_or_trained(args, name, part, seed, train, trained_from=""):
    """`train()` -> (model, extra); saved in `--models-dir`, or loaded from it when present.
    `trained_from`: a digest of what else the model learns from (a student's teacher
    outputs), part of its key.

    Returns (model, extra, training seconds, whether it was loaded)."""
    key = model_key(args, part)
    if trained_from:
        key = hashlib.sha256(f"{key}:{trained_from}".encode()).hexdigest()[:12]
    stem = args.models_dir / f"{name}_seed{seed}_{key}"
    path, meta = stem.with_suffix(".keras"), stem.with_suffix(".json")
    if path.exists() and meta.exists():
        info = json.loads(meta.read_text())
        log(f"seed {seed}: {name} loaded from {path}")
        return keras.saving.load_model(path), info["extra"], info["seconds"], True
    start = time.perf_counter()
    model, extra = train()
    seconds = time.perf_counter() - start
    args.models_dir.mkdir(parents=True, exist_ok=True)
    model.save(path)
    meta.write_text(json.dumps({"extra": extra, "seconds": seconds}) + "\n")
    return model, extra, seconds, False


def train_teacher(args, x, y, seed, member=0):
    """The MobileNetV2 teacher; `member` k > 0 of an ensemble trains from seed + 1000 k."""
    keras.utils.set_random_seed(seed + 1000 * member)
    size = (args.image_size, args.image_size)
    base = tfkd.transfer.pretrained_mobilenet_v2((*size, 3), include_top=False)
    fine_tune_learning_rate = args.fine_tune_learning_rate
    if args.teacher_schedule == "cosine":
        steps = args.fine_tune_epochs * math.ceil(len(x) / args.teacher_batch_size)
        fine_tune_learning_rate = keras.optimizers.schedules.CosineDecay(
            fine_tune_learning_rate, steps
        )
    teacher, history = tfkd.transfer.fine_tune(
        base,
        NUM_CLASSES,
        labelled_batches(
            x, y, args.teacher_batch_size, seed + 1000 * member, True, args.strong_augmentation
        ),
        head_epochs=args.head_epochs,
        fine_tune_epochs=args.fine_tune_epochs,
        head_learning_rate=1e-3,
        fine_tune_learning_rate=fine_tune_learning_rate,
        input_shape=(28, 28, 1),
        image_size=size,
        preprocessing=tfkd.transfer.torchvision_normalization(),
        name="mobilenet_v2_few_labels" + (f"_{member + 1}" if member else ""),
        verbose=0,
    )
    return teacher, [round(v, 4) for v in history.history["accuracy"]]


def student(seed):
    return tfkd.models.cnn((28, 28, 1), NUM_CLASSES, seed=seed, **STUDENT)


def adam(steps):
    return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(1e-3, steps))


LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def train_scratch(args, x, y, seed, augment):
    model = student(seed)
    keras.utils.set_random_seed(seed)
    steps = args.scratch_epochs * math.ceil(len(x) / args.scratch_batch_size)
    model.compile(optimizer=adam(steps), loss=LOSS)
    data = labelled_batches(x, y, args.scratch_batch_size, seed, augment, args.strong_augmentation)
    model.fit(data, epochs=args.scratch_epochs, verbose=0)
    return model


def train_distilled(args, name, teacher, x_train, hidden, seed, cache):
    """Student `name` distilled from `teacher`'s cached logits; saved in `--models-dir`
    under a key of the distill settings and of those logits, and loaded from there when
    present. Returns (student, logits seconds, logits, training seconds, whether loaded)."""
    model, distiller = new_distiller(args, teacher, seed)
    start = time.perf_counter()
    logits = distiller.predict_teacher(x_train, batch_size=512, cache=cache, runtime="litert")
    teacher_seconds = time.perf_counter() - start
    log(f"  teacher logits on {len(x_train)} training images: {teacher_seconds:.1f} s")
    model, seconds, loaded = distilled_on(
        args, name, (model, distiller), logits, x_train, hidden, seed
    )
    return model, teacher_seconds, logits, seconds, loaded


def outputs_digest(hidden, outputs):
    """A digest of the hidden labels and the cached `outputs` a model learns from: the
    `trained_from` of its key in `--models-dir`."""
    digest = hashlib.sha256(hidden.tobytes())
    for value in outputs.values():
        digest.update(np.asarray(value).tobytes())
    return digest.hexdigest()


def distilled_on(args, name, student_and_distiller, outputs, x_train, hidden, seed):
    """The student of `new_distiller(...)` trained on the cached teacher `outputs`, or
    loaded from `--models-dir` (keyed by the distill settings, `outputs` and `hidden`).
    Returns (student, training seconds, whether loaded)."""
    model, distiller = student_and_distiller

    def train():
        fit_on_teacher_outputs(distiller, args, x_train, hidden, outputs, seed, args.noisy_student)
        return model, None

    model, _, seconds, loaded = saved_or_trained(
        args, name, "distill", seed, train, trained_from=outputs_digest(hidden, outputs)
    )
    return model, seconds, loaded


def train_distilled_two_teachers(args, teacher, scratch, teacher_logits, x_train, hidden, seed):
    """The `distilled` recipe, its cached teacher logits replaced by the softened average
    (equal weights) of the MobileNetV2 teacher's logits and the scratch student's logits."""
    start = time.perf_counter()
    (key,) = teacher_logits  # the logits alone: {"output": array}
    averaged = average_of_two(teacher_logits[key], predict(scratch, x_train), args.temperature)
    outputs = {key: averaged}
    ensemble = tfkd.distill.teacher_ensemble(
        [teacher, scratch], weights=[0.5, 0.5], temperature=args.temperature
    )
    # The cached outputs are what the two-teacher model computes (checked on a few images).
    check = ensemble.predict(x_train[:64].astype("float32"), verbose=0)
    np.testing.assert_allclose(check, outputs[key][:64], atol=1e-3, rtol=1e-3)
    averaging_seconds = time.perf_counter() - start
    log(f"  softened average of the two teachers' logits: {averaging_seconds:.1f} s")
    model, distiller = new_distiller(args, ensemble, seed)
    fit_on_teacher_outputs(distiller, args, x_train, hidden, outputs, seed, args.noisy_student)
    return model, averaging_seconds


def new_distiller(args, teacher, seed):
    """The seed's fresh student and the Distiller that trains it from `teacher`."""
    model = student(seed)
    keras.utils.set_random_seed(seed)
    loss = tfkd.distill.LogitsDistillation(
        temperature=args.temperature, standardize=args.standardize
    )
    distiller = tfkd.Distiller(
        teacher,
        model,
        distillation_losses=[loss],
        student_loss_weight=args.student_loss_weight,
    )
    return model, distiller


def fit_on_teacher_outputs(distiller, args, x_train, hidden, outputs, seed, noisy):
    """Trains the distiller's student on cached teacher `outputs` (Adam, cosine decay);
    if `noisy` (`--noisy-student`), on images augmented anew each epoch in a tf.data pipeline,
    the outputs staying the teacher's on the clean images (Noisy Student)."""
    steps = args.distill_epochs * math.ceil(len(x_train) / args.batch_size)
    distiller.compile(optimizer=adam(steps), loss=LOSS)
    packed = tfkd.distill.with_teacher_outputs(x_train, outputs)
    if not noisy:
        distiller.fit(
            packed, hidden, batch_size=args.batch_size, epochs=args.distill_epochs, verbose=2
        )
        return
    import tensorflow as tf

    key = tfkd.distill.teacher_cache.STUDENT_INPUTS
    layers = augmentation(seed, args.strong_augmentation)

    def augmented(inputs, labels):
        return {**inputs, key: layers(tf.cast(inputs[key], "float32"), training=True)}, labels

    dataset = tf.data.Dataset.from_tensor_slices((packed, hidden))
    dataset = dataset.shuffle(len(hidden), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(args.batch_size).map(augmented).prefetch(2)
    distiller.fit(dataset, epochs=args.distill_epochs, verbose=2)


def export_int8(model, x_train, x_test, y_test, path):
    report = tfkd.export_tflite(
        model, path, quantization="int8", representative_data=x_train.astype("float32")
    )
    scores = tfkd.TFLiteModel(path).evaluate(x_test.astype("float32"), y_test)
    return scores["accuracy"], int(os.path.getsize(path)), report


def pseudo_labels(teacher_logits, student_logits, hidden, per_class):
    """The `per_class` unlabelled images of each class that the equal-weight average of
    the teacher and the distilled student is surest of: (indices, their argmax labels)."""
    averaged = average_of_two(teacher_logits, student_logits, temperature=1.0)
    confidence = keras.ops.convert_to_numpy(keras.ops.softmax(averaged)).max(-1)
    predicted = averaged.argmax(-1)
    unlabelled = hidden == tfkd.distill.UNLABELED
    picks = []
    for label in range(NUM_CLASSES):
        candidates = np.flatnonzero(unlabelled & (predicted == label))
        picks.append(candidates[np.argsort(-confidence[candidates], kind="stable")[:per_class]])
    picked = np.sort(np.concatenate(picks))
    return picked, predicted[picked].astype("int64")


def copy_of(model):
    """A copy with the same weights; layer configs keep `trainable` (frozen BatchNorm)."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def self_distill_teacher(args, fine_tuned, source, x_train, hidden, target, seed):
    """`--self-train-soft`: a copy of `fine_tuned` distilled on every training image from
    `target` (cached outputs of the model `source`: the softened average of the teacher
    and the distilled student, or with `--propagated-teacher` the propagated labels),
    cross-entropy on the labelled ones, `--self-train-epochs` epochs of the distillation
    batch, Adam with a cosine decay from `--self-train-learning-rate` to 0."""
    keras.utils.set_random_seed(seed)
    teacher = copy_of(fine_tuned)
    distiller = tfkd.Distiller(
        source,
        teacher,
        distillation_losses=[tfkd.distill.LogitsDistillation(temperature=1.0)],
        student_loss_weight=args.student_loss_weight,
    )
    steps = args.self_train_epochs * math.ceil(len(x_train) / args.batch_size)
    rate = keras.optimizers.schedules.CosineDecay(args.self_train_learning_rate, steps)
    distiller.compile(optimizer=keras.optimizers.Adam(rate), loss=LOSS)
    history = distiller.fit(
        tfkd.distill.with_teacher_outputs(x_train, target),
        hidden,
        batch_size=args.batch_size,
        epochs=args.self_train_epochs,
        verbose=2,
    )
    return teacher, [round(v, 4) for v in history.history["loss"]]


def self_train_teacher(args, fine_tuned, x, y, seed):
    """A copy of the fine-tuned teacher trained on for `--self-train-epochs` on `x, y` (the
    labelled and the pseudo-labelled images), with its augmentation and frozen
    BatchNormalization, Adam with a cosine decay from `--self-train-learning-rate` to 0."""
    keras.utils.set_random_seed(seed)
    teacher = copy_of(fine_tuned)
    steps = args.self_train_epochs * math.ceil(len(x) / args.teacher_batch_size)
    rate = keras.optimizers.schedules.CosineDecay(args.self_train_learning_rate, steps)
    teacher.compile(optimizer=keras.optimizers.Adam(rate), loss=LOSS, metrics=["accuracy"])
    history = teacher.fit(
        labelled_batches(x, y, args.teacher_batch_size, seed, True, args.strong_augmentation),
        epochs=args.self_train_epochs,
        verbose=0,
    )
    return teacher, [round(v, 4) for v in history.history["accuracy"]]


def score_arm(row, seconds, arm, model, teacher_key, data, work_dir, seed):
    """Scores `arm`'s student, exports and scores its int8 file, and records its gain over
    the scratch baseline, its gap to `row[teacher_key]` and its int8 drop."""
    (x_train, _), (x_test, y_test) = data
    row[arm] = accuracy(model, x_test, y_test)
    log(f"seed {seed}: {arm} {row[arm]:.4f} ({seconds[arm]:.0f} s)")
    start = time.perf_counter()
    path = work_dir / f"{arm}_seed{seed}_int8.tflite"
    row[f"{arm}_int8"], row[f"{arm}_int8_bytes"], report = export_int8(
        model, x_train, x_test, y_test, path
    )
    seconds[f"{arm}_export_int8"] = time.perf_counter() - start
    row[f"{arm}_int8_float_ops"] = getattr(report, "float_ops", None)
    log(f"seed {seed}: {arm} int8 {row[f'{arm}_int8']:.4f}, {row[f'{arm}_int8_bytes']} bytes")
    row[f"{arm}_gain_over_scratch"] = row[arm] - row["scratch"]
    row[f"{arm}_gap_to_teacher"] = row[teacher_key] - row[arm]
    row[f"{arm}_int8_drop"] = row[arm] - row[f"{arm}_int8"]


def run_self_trained(args, row, seconds, models, teacher_logits, data, hidden, seed, work_dir):
    """`--self-train-rounds` rounds of `self_training_round`, each from the teacher and the
    student of the round before. `models`: (teacher, distilled student).
    Returns the last round's teacher, its row key and its logits on the training images."""
    for number in range(1, args.self_train_rounds + 1):
        models, teacher_logits = self_training_round(
            args, row, seconds, models, teacher_logits, data, hidden, seed, work_dir, number
        )
    return models[0], f"teacher_self_trained{round_suffix(args.self_train_rounds)}", teacher_logits


def round_suffix(number):
    """The suffix of round `number`'s keys: none for the first (earlier runs' keys)."""
    return "" if number == 1 else f"_round{number}"


def self_training_round(
    args, row, seconds, models, teacher_logits, data, hidden, seed, work_dir, number
):
    """The `distilled_self_trained` arm (`..._roundK` for round K > 1): a copy of the
    teacher trained on from the teacher and the distilled student together (their surest
    hard pseudo-labels, or with `--self-train-soft` their softened average on every image),
    then a fresh student distilled from it. `models`: (teacher, distilled student).
    Returns the new (teacher, student) and the new teacher's logits on `x_train`."""
    (x_train, y_train), (x_test, y_test) = data
    teacher, distilled = models
    suffix = round_suffix(number)
    teacher_name, arm = f"teacher_self_trained{suffix}", f"distilled_self_trained{suffix}"
    start = time.perf_counter()
    (key,) = teacher_logits
    student_logits = predict(distilled, x_train)
    pseudo = f"pseudo_label_accuracy{suffix}"
    if args.self_train_soft:
        target = {key: average_of_two(teacher_logits[key], student_logits, temperature=1.0)}
        # A diagnostic only: the hidden labels play no part in training.
        row[pseudo] = float(np.mean(target[key].argmax(-1) == y_train))

        def train():
            ensemble = tfkd.distill.teacher_ensemble(list(models), weights=[0.5, 0.5])
            return self_distill_teacher(args, teacher, ensemble, x_train, hidden, target, seed)

    else:
        picked, labels = pseudo_labels(
            teacher_logits[key], student_logits, hidden, args.self_train_per_class
        )
        row[f"pseudo_labelled{suffix}"] = int(len(picked))
        row[pseudo] = float(np.mean(labels == y_train[picked]))  # diagnostic
        keep = hidden != tfkd.distill.UNLABELED
        x_self = np.concatenate([x_train[keep], x_train[picked]])
        y_self = np.concatenate([hidden[keep], labels])

        def train():
            return self_train_teacher(args, teacher, x_self, y_self, seed)

    seconds[f"self_train_pseudo_labels{suffix}"] = time.perf_counter() - start
    log(
        f"seed {seed}: round {number} pseudo-labels {row[pseudo]:.4f} correct "
        f"({seconds[f'self_train_pseudo_labels{suffix}']:.0f} s)"
    )
    trained, history, seconds[f"self_train_teacher{suffix}"], loaded = saved_or_trained(
        args, teacher_name, "self_train", seed, train
    )
    row["reused_models"] += [teacher_name] if loaded else []
    history_name = "loss" if args.self_train_soft else "accuracy"
    row[f"{teacher_name}_train_{history_name}_per_epoch"] = history
    row[teacher_name] = accuracy(trained, x_test, y_test)
    log(f"seed {seed}: {teacher_name} {row[teacher_name]:.4f}")
    cache = work_dir / f"{teacher_name}_logits_seed{seed}.npz"
    model, seconds[f"self_train_teacher_logits{suffix}"], logits, seconds[arm], loaded = (
        train_distilled(args, arm, trained, x_train, hidden, seed, cache)
    )
    row["reused_models"] += [arm] if loaded else []
    score_arm(row, seconds, arm, model, teacher_name, data, work_dir, seed)
    if args.pair_student:
        pair_arm(args, row, seconds, (trained, model), logits, data, hidden, seed, work_dir, number)
    return (trained, model), logits


def pair_arm(args, row, seconds, models, teacher_logits, data, hidden, seed, work_dir, number):
    """`--pair-student`: the `distilled_pair` arm (`..._roundK`), a fresh student distilled
    from the softened average (T=1, equal weights) of round `number`'s self-trained teacher
    and its student, which is the next round's target, without training that round's
    teacher. `models`: (teacher, student); `teacher_logits`: the teacher's, cached."""
    (x_train, y_train), _ = data
    teacher, student = models
    suffix = round_suffix(number)
    arm = f"distilled_pair{suffix}"
    start = time.perf_counter()
    (key,) = teacher_logits
    target = {key: average_of_two(teacher_logits[key], predict(student, x_train), temperature=1.0)}
    # A diagnostic only: the hidden labels play no part in training.
    row[f"pair_target_accuracy{suffix}"] = float(np.mean(target[key].argmax(-1) == y_train))
    seconds[f"{arm}_averaging"] = time.perf_counter() - start
    ensemble = tfkd.distill.teacher_ensemble([teacher, student], weights=[0.5, 0.5])
    pair, seconds[arm], loaded = distilled_on(
        args, arm, new_distiller(args, ensemble, seed), target, x_train, hidden, seed
    )
    row["reused_models"] += [arm] if loaded else []
    score_arm(row, seconds, arm, pair, f"teacher_self_trained{suffix}", data, work_dir, seed)


def consistent_arm(
    args, row, seconds, teacher, teacher_key, teacher_logits, data, hidden, seed, work_dir
):
    """`--consistent-copies K`: the `distilled_consistent` arm, a fresh student distilled
    (the distill settings) from `teacher` on the training images and K fixed shifted and
    flipped copies of each, with `teacher`'s outputs on each copy (cached, through LiteRT);
    `teacher_logits`: its cached outputs on the training images."""
    (x_train, _), _ = data
    arm, copies = CONSISTENT, args.consistent_copies
    start = time.perf_counter()
    x_copies = shifted_copies(x_train, copies, seed)
    model, distiller = new_distiller(args, teacher, seed)
    cache = work_dir / f"{teacher_key}_copies{copies}_logits_seed{seed}.npz"
    copy_logits = distiller.predict_teacher(x_copies, batch_size=512, cache=cache, runtime="litert")
    seconds[f"{arm}_teacher_logits"] = time.perf_counter() - start
    log(f"  teacher logits on {len(x_copies)} copies: {seconds[f'{arm}_teacher_logits']:.1f} s")
    outputs = {key: np.concatenate([teacher_logits[key], copy_logits[key]]) for key in copy_logits}
    x_all = np.concatenate([x_train, x_copies])
    hidden_all = np.concatenate([hidden, np.tile(hidden, copies)])
    student, seconds[arm], loaded = distilled_on(
        args, arm, (model, distiller), outputs, x_all, hidden_all, seed
    )
    row["reused_models"] += [arm] if loaded else []
    score_arm(row, seconds, arm, student, teacher_key, data, work_dir, seed)


def pooled_features(teacher, x):
    """The teacher's pooled backbone features on `x`: the input of its Dense head."""
    pooled = keras.Model(teacher.inputs, teacher.get_layer("head_logits").input)
    return predict(pooled, x)


def propagated_arm(args, row, seconds, teacher, teacher_key, data, hidden, seed, work_dir):
    """`--label-propagation`: the `distilled_propagated` arm, a fresh student distilled (the
    distill settings) from `tfkd.distill.propagate_labels` over `teacher`'s pooled features
    on the training images, in place of `teacher`'s outputs."""
    (x_train, y_train), _ = data
    start = time.perf_counter()
    propagated = tfkd.distill.propagate_labels(
        pooled_features(teacher, x_train), hidden, NUM_CLASSES
    )
    seconds[f"{PROPAGATED}_targets"] = time.perf_counter() - start
    unlabelled = hidden == tfkd.distill.UNLABELED
    # A diagnostic only: the hidden labels play no part in training.
    row[f"{PROPAGATED}_targets_right"] = float(
        np.mean(propagated[unlabelled].argmax(-1) == y_train[unlabelled])
    )
    log(
        f"seed {seed}: propagated labels {row[f'{PROPAGATED}_targets_right']:.4f} right on the "
        f"unlabelled images ({seconds[f'{PROPAGATED}_targets']:.0f} s)"
    )
    outputs = {tfkd.distill.teacher_cache.OUTPUT: np.log(propagated + 1e-8)}
    student, seconds[PROPAGATED], loaded = distilled_on(
        args, PROPAGATED, new_distiller(args, teacher, seed), outputs, x_train, hidden, seed
    )
    row["reused_models"] += [PROPAGATED] if loaded else []
    score_arm(row, seconds, PROPAGATED, student, teacher_key, data, work_dir, seed)
    return propagated


def propagated_teacher_arm(args, row, seconds, teacher, propagated, data, hidden, seed, work_dir):
    """`--propagated-teacher`: the `teacher_propagated` round, a copy of `teacher` (the
    last) distilled from the `propagated` labels as a soft self-training round is from its
    average, and the `distilled_teacher_propagated` arm, a fresh student distilled from the
    equal-weight average of that teacher's softmax and the labels propagated anew along a
    graph of its pooled features."""
    (x_train, y_train), (x_test, y_test) = data
    target = {tfkd.distill.teacher_cache.OUTPUT: np.log(propagated + 1e-8)}

    def train():
        return self_distill_teacher(args, teacher, teacher, x_train, hidden, target, seed)

    trained, history, seconds[PROPAGATED_TEACHER], loaded = saved_or_trained(
        args,
        PROPAGATED_TEACHER,
        "self_train",
        seed,
        train,
        trained_from=outputs_digest(hidden, target),
    )
    row["reused_models"] += [PROPAGATED_TEACHER] if loaded else []
    row[f"{PROPAGATED_TEACHER}_train_loss_per_epoch"] = history
    row[PROPAGATED_TEACHER] = accuracy(trained, x_test, y_test)
    log(f"seed {seed}: {PROPAGATED_TEACHER} {row[PROPAGATED_TEACHER]:.4f}")
    start = time.perf_counter()
    features = pooled_features(trained, x_train)
    # Its outputs from its head on the features: the same logits as a second full pass.
    logits = trained.get_layer("head_logits")(features)
    probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(logits))
    anew = tfkd.distill.propagate_labels(features, hidden, NUM_CLASSES)
    targets = 0.5 * probabilities + 0.5 * anew
    seconds[f"{PROPAGATED_TEACHER_ARM}_targets"] = time.perf_counter() - start
    unlabelled = hidden == tfkd.distill.UNLABELED
    # Diagnostics only: the hidden labels play no part in training.
    for key, values in (
        (f"{PROPAGATED_TEACHER}_right", probabilities),
        (f"{PROPAGATED_TEACHER_ARM}_propagated_right", anew),
        (f"{PROPAGATED_TEACHER_ARM}_targets_right", targets),
    ):
        row[key] = float(np.mean(values[unlabelled].argmax(-1) == y_train[unlabelled]))
    log(
        f"seed {seed}: on the unlabelled images, {PROPAGATED_TEACHER} right on "
        f"{row[f'{PROPAGATED_TEACHER}_right']:.4f}, the labels propagated over its features "
        f"{row[f'{PROPAGATED_TEACHER_ARM}_propagated_right']:.4f}, their average "
        f"{row[f'{PROPAGATED_TEACHER_ARM}_targets_right']:.4f}"
    )
    outputs = {tfkd.distill.teacher_cache.OUTPUT: np.log(targets + 1e-8)}
    arm = PROPAGATED_TEACHER_ARM
    student, seconds[arm], loaded = distilled_on(
        args, arm, new_distiller(args, trained, seed), outputs, x_train, hidden, seed
    )
    row["reused_models"] += [arm] if loaded else []
    score_arm(row, seconds, arm, student, PROPAGATED_TEACHER, data, work_dir, seed)


def run_seed(args, data, seed, work_dir):
    seed_start = time.perf_counter()
    (x_train, y_train), (x_test, y_test) = data
    keep, hidden = hide_labels(y_train, args.labelled_per_class, seed)
    x_labelled, y_labelled = x_train[keep], y_train[keep]
    row, seconds = {"labelled": int(len(keep)), "unlabelled": int(len(x_train) - len(keep))}, {}

    reused, members, member_logits, member_scores = [], [], [], []
    for member in range(args.teachers):
        name = "teacher" if member == 0 else f"teacher{member + 1}"

        def train(member=member):
            return train_teacher(args, x_labelled, y_labelled, seed, member)

        model, history, seconds[f"{name}_fine_tune"], loaded = saved_or_trained(
            args, name, "teacher", seed, train
        )
        reused += [name] if loaded else []
        members.append(model)
        member_logits.append(predict(model, x_test))
        member_scores.append(accuracy(None, x_test, y_test, member_logits[-1]))
        row[f"{name}_train_accuracy_per_epoch"] = history
        log(f"seed {seed}: {name} {member_scores[-1]:.4f} ({seconds[f'{name}_fine_tune']:.0f} s)")
    if len(members) == 1:
        (teacher,), (teacher_test_logits,) = members, member_logits
    else:
        # The teacher is the ensemble: the softened average at the distillation temperature,
        # on the test images from the members' logits (what the ensemble model computes).
        row["teacher_members"] = member_scores
        teacher = tfkd.distill.teacher_ensemble(members, temperature=args.temperature)
        teacher_test_logits = keras.ops.convert_to_numpy(
            tfkd.distill.softened_average(
                member_logits, [1 / len(members)] * len(members), temperature=args.temperature
            )
        )
    row["teacher"] = accuracy(None, x_test, y_test, teacher_test_logits)
    if len(members) > 1:
        log(f"seed {seed}: teacher ensemble {row['teacher']:.4f}")
    row["reused_models"] = reused
    if args.teachers_only:
        return finish(row, seconds, seed_start)

    scratch_models = {}
    for name, augment in (("scratch_augmented", True), ("scratch_plain", False)):

        def train(augment=augment):
            return train_scratch(args, x_labelled, y_labelled, seed, augment), None

        model, _, seconds[name], loaded = saved_or_trained(args, name, "scratch", seed, train)
        reused += [name] if loaded else []
        scratch_models[name] = model
        row[name] = accuracy(model, x_test, y_test)
        log(f"seed {seed}: {name} {row[name]:.4f} ({seconds[name]:.0f} s)")
    row["scratch"] = max(row["scratch_augmented"], row["scratch_plain"])
    # The baseline model, also the second teacher of `distilled_two_teachers` (a tie: augmented).
    row["scratch_model"] = (
        "scratch_augmented" if row["scratch_augmented"] >= row["scratch_plain"] else "scratch_plain"
    )

    cache = work_dir / f"teacher_logits_seed{seed}.npz"
    distilled, seconds["teacher_logits"], teacher_logits, seconds["distill"], loaded = (
        train_distilled(args, "distilled", teacher, x_train, hidden, seed, cache)
    )
    reused += ["distilled"] if loaded else []
    row["distilled"] = accuracy(distilled, x_test, y_test)
    log(f"seed {seed}: distilled {row['distilled']:.4f} ({seconds['distill']:.0f} s)")
    if args.noisy_student:  # the control: the same student, distilled on the clean images
        start = time.perf_counter()
        clean, distiller = new_distiller(args, teacher, seed)
        fit_on_teacher_outputs(distiller, args, x_train, hidden, teacher_logits, seed, False)
        seconds["distilled_clean"] = time.perf_counter() - start
        row["distilled_clean"] = accuracy(clean, x_test, y_test)
        log(f"seed {seed}: distilled_clean {row['distilled_clean']:.4f}")

    start = time.perf_counter()
    path = work_dir / f"distilled_seed{seed}_int8.tflite"
    row["int8"], row["int8_bytes"], report = export_int8(distilled, x_train, x_test, y_test, path)
    seconds["export_int8"] = time.perf_counter() - start
    row["int8_float_ops"] = getattr(report, "float_ops", None)
    log(f"seed {seed}: int8 {row['int8']:.4f}, {row['int8_bytes']} bytes")

    row["gain_over_scratch"] = row["distilled"] - row["scratch"]
    row["gap_to_teacher"] = row["teacher"] - row["distilled"]
    row["int8_drop"] = row["distilled"] - row["int8"]

    row["parameters"] = {"teacher": teacher.count_params(), "student": distilled.count_params()}
    last = teacher, "teacher", teacher_logits
    if args.self_train_per_class or args.self_train_soft:
        models = (teacher, distilled)
        last = run_self_trained(
            args, row, seconds, models, teacher_logits, data, hidden, seed, work_dir
        )
    if args.consistent_copies:
        consistent_arm(args, row, seconds, *last, data, hidden, seed, work_dir)
    if args.label_propagation:
        propagated = propagated_arm(args, row, seconds, *last[:2], data, hidden, seed, work_dir)
        if args.propagated_teacher:
            propagated_teacher_arm(
                args, row, seconds, last[0], propagated, data, hidden, seed, work_dir
            )
    if args.skip_two_teachers:
        return finish(row, seconds, seed_start)
    arm = "distilled_two_teachers"
    second = scratch_models[row["scratch_model"]]
    # The two teachers' own average, scored on the test images (argmax of the average).
    row["two_teachers_average"] = accuracy(
        None,
        x_test,
        y_test,
        average_of_two(teacher_test_logits, predict(second, x_test), args.temperature),
    )
    log(f"seed {seed}: the two teachers' softened average {row['two_teachers_average']:.4f}")
    start = time.perf_counter()
    two, seconds[f"{arm}_averaging"] = train_distilled_two_teachers(
        args, teacher, second, teacher_logits, x_train, hidden, seed
    )
    seconds[arm] = time.perf_counter() - start - seconds[f"{arm}_averaging"]
    score_arm(row, seconds, arm, two, "teacher", data, work_dir, seed)

    return finish(row, seconds, seed_start)


def finish(row, seconds, seed_start):
    """`row` with the seed's seconds per part and in total, rounded."""
    seconds["total"] = time.perf_counter() - seed_start
    row["seconds"] = {key: round(value, 1) for key, value in seconds.items()}
    return row


def self_training_keys(rounds):
    """The row keys of self-training's rounds after the first."""
    keys = []
    for number in range(2, rounds + 1):
        suffix, arm = round_suffix(number), f"distilled_self_trained{round_suffix(number)}"
        keys += [f"pseudo_label_accuracy{suffix}", f"teacher_self_trained{suffix}", arm]
        keys += [f"{arm}_{part}" for part in ARM_PARTS]
    return keys


def pair_keys(rounds):
    """The row keys of `--pair-student`'s arms, one a round."""
    keys = []
    for number in range(1, rounds + 1):
        suffix, arm = round_suffix(number), f"distilled_pair{round_suffix(number)}"
        keys += [f"pair_target_accuracy{suffix}", arm, *(f"{arm}_{part}" for part in ARM_PARTS)]
    return keys


ARM_PARTS = ("int8", "gain_over_scratch", "gap_to_teacher", "int8_drop")
CONSISTENT = "distilled_consistent"
PROPAGATED = "distilled_propagated"
PROPAGATED_TEACHER = "teacher_propagated"
PROPAGATED_TEACHER_ARM = "distilled_teacher_propagated"


def summarise(rows, rounds=1):
    """Mean, std and values of each score over the seeds, and issue 15's targets;
    `rounds`: the rounds of self-training."""
    keys = [
        "teacher",
        "scratch_augmented",
        "scratch_plain",
        "scratch",
        "distilled",
        "distilled_clean",
        "int8",
        "gain_over_scratch",
        "gap_to_teacher",
        "int8_drop",
        "pseudo_label_accuracy",
        "teacher_self_trained",
        "distilled_self_trained",
        "distilled_self_trained_int8",
        "distilled_self_trained_gain_over_scratch",
        "distilled_self_trained_gap_to_teacher",
        "distilled_self_trained_int8_drop",
        "two_teachers_average",
        "distilled_two_teachers",
        "distilled_two_teachers_int8",
        "distilled_two_teachers_gain_over_scratch",
        "distilled_two_teachers_gap_to_teacher",
        "distilled_two_teachers_int8_drop",
        *self_training_keys(rounds),
        *pair_keys(rounds),
        CONSISTENT,
        *(f"{CONSISTENT}_{part}" for part in ARM_PARTS),
        f"{PROPAGATED}_targets_right",
        PROPAGATED,
        *(f"{PROPAGATED}_{part}" for part in ARM_PARTS),
        PROPAGATED_TEACHER,
        f"{PROPAGATED_TEACHER}_right",
        f"{PROPAGATED_TEACHER_ARM}_propagated_right",
        f"{PROPAGATED_TEACHER_ARM}_targets_right",
        PROPAGATED_TEACHER_ARM,
        *(f"{PROPAGATED_TEACHER_ARM}_{part}" for part in ARM_PARTS),
    ]
    summary = {}
    for key in (key for key in keys if all(key in row for row in rows)):
        values = [row[key] for row in rows]
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        summary[key] = {"mean": statistics.fmean(values), "std": std, "values": values}
    if "distilled" not in summary:  # --teachers-only
        return summary
    summary["targets"] = {
        "distilled >= scratch + 3 points, every seed": all(
            row["gain_over_scratch"] >= TARGETS["gain_over_scratch"] for row in rows
        ),
        "distilled within 1 point of its teacher, every seed": all(
            row["gap_to_teacher"] <= TARGETS["gap_to_teacher"] for row in rows
        ),
        "int8 within 0.5 points of the float student, every seed": all(
            abs(row["int8_drop"]) <= TARGETS["int8_drop"] for row in rows
        ),
    }
    arms = [("distilled_self_trained", "the self-trained teacher")]
    arms += [
        (f"distilled_self_trained{round_suffix(k)}", f"the round-{k} self-trained teacher")
        for k in range(2, rounds + 1)
    ]
    arms += [
        (f"distilled_pair{round_suffix(k)}", f"the round-{k} self-trained teacher")
        for k in range(1, rounds + 1)
    ]
    last_teacher = (
        f"the round-{rounds} self-trained teacher"
        if any("teacher_self_trained" in row for row in rows)
        else "the MobileNetV2 teacher"
    )
    arms += [(CONSISTENT, last_teacher), (PROPAGATED, last_teacher)]
    arms += [(PROPAGATED_TEACHER_ARM, "the teacher trained on the propagated labels")]
    for arm, teacher in [*arms, ("distilled_two_teachers", "the MobileNetV2 teacher")]:
        if arm in summary:
            summary["targets"] |= arm_targets(rows, arm, teacher)
    return summary


def arm_targets(rows, arm, teacher):
    """Issue 15's three few-labels targets for `arm`, met on every seed or not."""
    return {
        f"{arm} >= scratch + 3 points, every seed": all(
            row[f"{arm}_gain_over_scratch"] >= TARGETS["gain_over_scratch"] for row in rows
        ),
        f"{arm} within 1 point of {teacher}, every seed": all(
            row[f"{arm}_gap_to_teacher"] <= TARGETS["gap_to_teacher"] for row in rows
        ),
        f"{arm} int8 within 0.5 points of its float student, every seed": all(
            abs(row[f"{arm}_int8_drop"]) <= TARGETS["int8_drop"] for row in rows
        ),
    }


def write_json(path, results):
    """Atomic: a crash leaves the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(handle, "w") as file:
        file.write(json.dumps(results, indent=2) + "\n")
    os.replace(temporary, path)


def finished_seeds(path, current_settings):
    """Seeds already in `path` from a run with the same settings: a rerun adds seeds."""
    if not path.exists():
        return {}
    previous = json.loads(path.read_text())
    same = json.dumps(previous.get("settings"), sort_keys=True) == json.dumps(
        json.loads(json.dumps(current_settings)), sort_keys=True
    )
    return previous.get("seeds", {}) if same else {}


def settings(args):
    current = {
        "smoke": args.smoke,
        "labelled_per_class": args.labelled_per_class,
        "teacher": {
            "backbone": "tfkd.transfer.pretrained_mobilenet_v2 (torchvision ImageNet weights)",
            "image_size": args.image_size,
            "preprocessing": "resize inside the model, grayscale to RGB, torchvision normalization",
            "head_epochs": args.head_epochs,
            "head_learning_rate": 1e-3,
            "fine_tune_epochs": args.fine_tune_epochs,
            "fine_tune_learning_rate": args.fine_tune_learning_rate,
            # Only when not the default, so that earlier runs' saved teachers keep their key.
            **(
                {"fine_tune_schedule": "cosine decay to 0 over the fine-tuning steps"}
                if args.teacher_schedule == "cosine"
                else {}
            ),
            "unfreeze": "all (BatchNormalization frozen)",
            "batch_size": args.teacher_batch_size,
            "augmentation": "RandomTranslation(0.1, 0.1, fill_mode='constant') + "
            "RandomFlip('horizontal'), on the labelled images",
            # Only when set, so that earlier runs' saved teachers keep their key.
            **({"strong_augmentation": STRONG} if args.strong_augmentation else {}),
            "data": "the 1,000 labelled training images only",
        },
        "student": {"builder": "tfkd.models.cnn", **STUDENT},
        "scratch": {
            "epochs": args.scratch_epochs,
            "batch_size": args.scratch_batch_size,
            "optimizer": "Adam, cosine decay from 1e-3",
            "variants": "with the teacher's augmentation and without; baseline = the better",
            **({"strong_augmentation": STRONG} if args.strong_augmentation else {}),
            "data": "the 1,000 labelled training images only",
        },
        "distill": {
            "epochs": args.distill_epochs,
            "batch_size": args.batch_size,
            "optimizer": "Adam, cosine decay from 1e-3",
            "temperature": args.temperature,
            # Only when set, so that earlier runs' settings (and their seeds) still match.
            **({"standardize": True} if args.standardize else {}),
            "student_loss_weight": args.student_loss_weight,
            "teacher_outputs": "cached (Distiller.predict_teacher(cache=..., "
            "runtime='litert')), on the clean images",
            # Only when set, so that earlier runs' settings (and their seeds) still match.
            **({"noisy_student": NOISY} if args.noisy_student else {}),
            "data": "all training images; labels hidden as tfkd.distill.UNLABELED except 1,000",
        },
        "distilled_two_teachers": {
            "recipe": "the distill settings above (same student, epochs, optimizer, temperature, "
            "student_loss_weight, data)",
            "teacher_outputs": "tfkd.distill.softened_average([MobileNetV2 teacher logits, scratch "
            "student logits], weights [0.5, 0.5], temperature=distill temperature) on the "
            "training images, computed once from the cached teacher logits; Distiller teacher "
            "= tfkd.distill.teacher_ensemble of the same two models",
            "second_teacher": "the scratch baseline model of the seed: the better of "
            "scratch_augmented and scratch_plain on the test images (per seed: scratch_model)",
        },
        "int8": "tfkd.export_tflite(quantization='int8', representative_data=training "
        "images, 500 calibration samples), scored by tfkd.TFLiteModel.evaluate",
        "test_images": "all 10,000 (--smoke: 500)",
    }
    if args.teachers > 1:
        # Outside "teacher", so that the first member keeps the key of a lone teacher.
        current["teacher_ensemble"] = (
            f"{args.teachers} teachers of the settings above, member k fine-tuned from seed + "
            "1000 k (initial head, batch order, augmentation) on the same labels; the teacher "
            "is tfkd.distill.teacher_ensemble of them (equal weights, at the distillation "
            "temperature), cached and scored as one model; teacher_members: each alone"
        )
    if args.self_train_soft:
        current["self_train"] = {
            "target": "on every training image, the softened average (T=1, equal weights) of "
            "the teacher's and the distilled student's logits, cached",
            "teacher": "a copy of the fine-tuned teacher distilled from it (tfkd.Distiller, "
            "LogitsDistillation(temperature=1), student_loss_weight as in distill, "
            "cross-entropy on the 1,000 labels), no augmentation, frozen BatchNormalization",
            "epochs": args.self_train_epochs,
            "batch_size": args.batch_size,
            "optimizer": f"Adam, cosine decay from {args.self_train_learning_rate} to 0",
            "distilled_self_trained": "a fresh student distilled from the self-trained teacher "
            "with the distill settings above (its logits cached anew)",
        }
    elif args.self_train_per_class:
        current["self_train"] = {
            "pseudo_labels": f"the {args.self_train_per_class} unlabelled training images per "
            "class that the equal-weight softened average (T=1) of the teacher and the "
            "distilled student is surest of, labelled with its argmax",
            "teacher": "the fine-tuned teacher trained on (not from ImageNet again) on the "
            "labelled and the pseudo-labelled images, with its augmentation and frozen "
            "BatchNormalization",
            "epochs": args.self_train_epochs,
            "batch_size": args.teacher_batch_size,
            "optimizer": f"Adam, cosine decay from {args.self_train_learning_rate} to 0",
            "distilled_self_trained": "a fresh student distilled from the self-trained teacher "
            "with the distill settings above (its logits cached anew)",
        }
    if args.self_train_rounds > 1 and "self_train" in current:
        current["self_train"]["rounds"] = (
            f"{args.self_train_rounds}: round k > 1 trains a copy of round k-1's teacher the same "
            "way from round k-1's teacher and student (teacher_self_trained_roundk), then a "
            "fresh student from it (distilled_self_trained_roundk)"
        )
    if args.pair_student and "self_train" in current:
        # Outside "self_train", so that the saved self-trained teachers keep their key.
        current["pair_student"] = (
            "each round, a fresh student distilled (the distill settings above) from the "
            "softened average (T=1, equal weights) of the round's self-trained teacher and its "
            "student on every training image, cached: distilled_pair(_roundk)"
        )
    if args.consistent_copies:
        current["consistent"] = (
            f"distilled_consistent: a fresh student distilled (the distill settings above, "
            f"{args.distill_epochs} epochs) from the last teacher (the last self-training "
            "round's, else the fine-tuned one) on the training images and "
            f"{args.consistent_copies} fixed copies of each (tfkd.pipeline.Data."
            "augmented_copies: shifts of up to 2 pixels, half flipped, seeded by the seed), "
            "the teacher's outputs computed on each copy (cached, LiteRT); a copy keeps its "
            "image's label or its being unlabelled"
        )
    if args.label_propagation:
        current["propagated"] = (
            f"{PROPAGATED}: a fresh student distilled (the distill settings above) from "
            "tfkd.distill.propagate_labels(features, labels, 10) (10 neighbours, alpha 0.9, 30 "
            "iterations, similarity cubed) over the last teacher's pooled features (the input "
            "of head_logits) on the training images, from the labelled images only; its log "
            "taken as the cached teacher outputs"
        )
    if args.propagated_teacher:
        current["propagated_teacher"] = (
            f"{PROPAGATED_TEACHER}: a copy of the last teacher distilled from the labels of "
            f"{PROPAGATED} as a --self-train-soft round is ({args.self_train_epochs} epochs, "
            f"T=1, student loss weight {args.student_loss_weight}); "
            f"{PROPAGATED_TEACHER_ARM}: a fresh student distilled (the distill settings above) "
            f"from the equal-weight average of {PROPAGATED_TEACHER}'s softmax and "
            "tfkd.distill.propagate_labels(its pooled features, labels, 10), its log taken as "
            "the cached teacher outputs"
        )
    if args.skip_two_teachers:
        current["distilled_two_teachers"] = "not run (--skip-two-teachers)"
    if args.teachers_only:
        current["teachers_only"] = "the teachers alone, fine-tuned (or loaded) and scored"
    return current


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--labelled-per-class", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=128, help="teacher input size")
    parser.add_argument("--head-epochs", type=int, default=5)
    parser.add_argument("--fine-tune-epochs", type=int, default=30)
    parser.add_argument("--fine-tune-learning-rate", type=float, default=1e-4)
    parser.add_argument(
        "--teacher-schedule",
        choices=("constant", "cosine"),
        default="constant",
        help="the teacher's fine-tuning learning rate: constant, or cosine decay to 0",
    )
    parser.add_argument(
        "--skip-two-teachers",
        action="store_true",
        help="leave out the distilled_two_teachers arm (about 5 minutes a seed)",
    )
    parser.add_argument(
        "--teachers",
        type=int,
        default=1,
        help="fine-tune this many MobileNetV2 teachers per seed (member k from seed + 1000 k, "
        "on the same labels) and distil from their softened average "
        "(tfkd.distill.teacher_ensemble)",
    )
    parser.add_argument(
        "--self-train-per-class",
        type=int,
        default=0,
        help="after distilling, pseudo-label this many unlabelled images per class (the "
        "surest of the teacher and the distilled student together), train the teacher on "
        "with them and distil a fresh student from it (distilled_self_trained); 0: not run",
    )
    parser.add_argument(
        "--self-train-soft",
        action="store_true",
        help="self-train the teacher on every training image instead, distilled from the "
        "softened average of itself and the distilled student (no pseudo-label cut)",
    )
    parser.add_argument("--self-train-epochs", type=int, default=3)
    parser.add_argument(
        "--self-train-rounds",
        type=int,
        default=1,
        help="repeat self-training this many times, each round from the teacher and the "
        "student of the round before (distilled_self_trained_roundK)",
    )
    parser.add_argument("--self-train-learning-rate", type=float, default=1e-4)
    parser.add_argument(
        "--pair-student",
        action="store_true",
        help="each self-training round, also distil a fresh student from the softened average "
        "of the round's teacher and its student (distilled_pair), with no further teacher",
    )
    parser.add_argument(
        "--strong-augmentation",
        action="store_true",
        help="add zooms and random erasing to the shifts and flips of the labelled images, "
        "for the teacher and the augmented scratch student alike",
    )
    parser.add_argument("--teacher-batch-size", type=int, default=32)
    parser.add_argument("--scratch-epochs", type=int, default=200)
    parser.add_argument("--scratch-batch-size", type=int, default=32)
    parser.add_argument("--distill-epochs", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=128, help="distillation batch")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument(
        "--standardize",
        action="store_true",
        help="z-score the logits before the softmax (LogitsDistillation(standardize=True))",
    )
    parser.add_argument("--student-loss-weight", type=float, default=0.1)
    parser.add_argument(
        "--noisy-student",
        action="store_true",
        help="augment the students' distillation images each epoch (shifts and flips, as "
        "the labelled images), against the teacher's cached outputs on the clean images",
    )
    parser.add_argument(
        "--consistent-copies",
        type=int,
        default=0,
        help="distil a fresh student from the last teacher on the training images and this "
        "many fixed shifted and flipped copies of each, with the teacher's outputs on each "
        "copy (distilled_consistent); 0: not run",
    )
    parser.add_argument(
        "--label-propagation",
        action="store_true",
        help="distil a fresh student from labels propagated along a kNN graph of the last "
        "teacher's pooled features (distilled_propagated)",
    )
    parser.add_argument(
        "--propagated-teacher",
        action="store_true",
        help="with --label-propagation and --self-train-soft: train a copy of the last "
        "teacher on the propagated labels (teacher_propagated), and distil a fresh student "
        "from the average of its softmax and the labels propagated over its features "
        "(distilled_teacher_propagated)",
    )
    parser.add_argument("--work-dir", type=pathlib.Path, help="teacher logits cache, .tflite")
    parser.add_argument(
        "--models-dir",
        type=pathlib.Path,
        default=pathlib.Path(tempfile.gettempdir()) / "tfkd_distill_few_labels_models",
        help="the fine-tuned teacher and scratch students per seed, saved and reused when "
        "present (keyed by the settings that train them)",
    )
    parser.add_argument(
        "--output",
        type=pathlib.Path,
        help="JSON results. Defaults to benchmarks/results/distill_few_labels.json, and "
        "with --smoke to a file in the temporary directory (never the committed results)",
    )
    parser.add_argument(
        "--teachers-only",
        action="store_true",
        help="fine-tune (or load from --models-dir) and score the teachers, nothing else",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, about a minute")
    args = parser.parse_args(argv)
    if args.teachers < 1:
        parser.error(f"--teachers must be at least 1. Received: {args.teachers}.")
    if args.self_train_per_class < 0 or args.self_train_epochs < 1:
        parser.error(
            "--self-train-per-class must be >= 0 and --self-train-epochs >= 1. Received: "
            f"{args.self_train_per_class} and {args.self_train_epochs}."
        )
    if args.self_train_rounds < 1 or (
        args.self_train_rounds > 1 and not (args.self_train_soft or args.self_train_per_class)
    ):
        parser.error(
            "--self-train-rounds must be >= 1, and above 1 only with --self-train-soft or "
            f"--self-train-per-class. Received: {args.self_train_rounds}."
        )
    if args.consistent_copies < 0 or (args.consistent_copies and args.noisy_student):
        parser.error(
            "--consistent-copies must be >= 0, and not with --noisy-student (whose images "
            f"are augmented anew against the clean images' outputs). Received: "
            f"{args.consistent_copies}."
        )
    if args.pair_student and not (args.self_train_soft or args.self_train_per_class):
        parser.error("--pair-student needs self-training (--self-train-soft or -per-class).")
    if args.propagated_teacher and not (args.label_propagation and args.self_train_soft):
        parser.error("--propagated-teacher needs --label-propagation and --self-train-soft.")
    if args.self_train_soft and args.self_train_per_class:
        parser.error("--self-train-soft and --self-train-per-class are two ways; pick one.")
    if (args.self_train_per_class or args.self_train_soft) and args.teachers > 1:
        parser.error("Self-training trains one teacher on; it takes --teachers 1.")
    if args.output is None:
        name = "distill_few_labels_smoke.json" if args.smoke else "distill_few_labels.json"
        folder = (
            pathlib.Path(tempfile.gettempdir()) if args.smoke else ROOT / "benchmarks" / "results"
        )
        args.output = folder / name
    if args.smoke:
        args.labelled_per_class, args.image_size = 5, 32
        args.head_epochs = args.fine_tune_epochs = args.distill_epochs = 1
        args.scratch_epochs = 2
    return args


def main(argv=None):
    args = parse_args(argv)
    # --smoke keeps its own folder: its small logits caches would replace a full run's.
    default = "tfkd_distill_few_labels_smoke" if args.smoke else "tfkd_distill_few_labels"
    work_dir = args.work_dir or pathlib.Path(tempfile.gettempdir()) / default
    work_dir.mkdir(parents=True, exist_ok=True)
    data = load_data(args.smoke)
    results = {
        "command": "python benchmarks/distill_few_labels.py " + " ".join(sys.argv[1:]),
        "backend": keras.backend.backend(),
        "machine": machine(),
        "git_commit": git_commit(),
        "settings": settings(args),
        "seeds": {},
    }
    log(f"{len(data[0][0])} training images, {len(data[1][0])} test images")
    finished = finished_seeds(args.output, results["settings"])
    rows = []
    for seed in args.seeds:
        if str(seed) in finished:
            log(f"seed {seed}: reusing the finished run in {args.output} (same settings)")
            rows.append(finished[str(seed)])
            results.setdefault("reused_seeds", []).append(seed)
        else:
            rows.append(run_seed(args, data, seed, work_dir))
        results["seeds"][str(seed)] = rows[-1]
        results.update(summarise(rows, args.self_train_rounds))
        results["seconds"] = round(time.perf_counter() - START, 1)
        write_json(args.output, results)
        log(f"seed {seed} done, wrote {args.output}")
    for key in (
        "teacher",
        "scratch",
        "distilled",
        "distilled_clean",
        "int8",
        "gain_over_scratch",
        "teacher_self_trained",
        "distilled_self_trained",
        "distilled_self_trained_int8",
        "distilled_self_trained_gain_over_scratch",
        "distilled_two_teachers",
        "distilled_two_teachers_int8",
        "distilled_two_teachers_gain_over_scratch",
        *self_training_keys(args.self_train_rounds),
        *(key for key in pair_keys(args.self_train_rounds) if "_int8_" not in key),
        CONSISTENT,
        f"{CONSISTENT}_int8",
        f"{CONSISTENT}_gain_over_scratch",
        PROPAGATED,
        f"{PROPAGATED}_int8",
        f"{PROPAGATED}_gain_over_scratch",
    ):
        if key not in results:
            continue
        log(f"{key}: {results[key]['mean']:.4f} +- {results[key]['std']:.4f}")
    for target, met in results.get("targets", {}).items():
        log(f"{target}: {'met' if met else 'MISSED'}")


if __name__ == "__main__":
    main()

"""The pipeline engine: runs a checked `Pipeline`'s stages with resume (fingerprints
and the run directory), measures each stage's model, and writes the report.

`Pipeline` (the composite of stages) and its checks live in `pipeline.py`, which imports
no Keras; this module loads Keras and TensorFlow, when a pipeline runs.
"""

import contextlib
import importlib.metadata
import pathlib
import time

import keras
import numpy as np

from tfkd import _checks, _graph, _hashing, models
from tfkd.distill import UNLABELED, teacher_cache
from tfkd.distill.propagation import LabelGraph
from tfkd.export import TFLiteModel
from tfkd.pipeline import _keras_file, _measure, _processes, _store, architectures, report
from tfkd.pipeline.context import Context, keras_verbose
from tfkd.pipeline.pipeline import Pipeline
from tfkd.pipeline.stage import Stage, StageError

# Propagated labels are checked on the known labels in this many folds (fewer when fewer
# examples are labelled); the array's name in their cache file.
HELD_OUT_FOLDS = 5
HELD_OUT = "held_out"


def execute(pipeline, data, output_dir, options, log):
    """Runs `pipeline` on `data` (a `tfkd.pipeline.Data`) into `output_dir`; returns the
    `Report`. Everything was checked by `Pipeline.execute`, except what needs the
    models (`_check_against_models`), checked here before any stage runs.

    Args:
        options: a `RunOptions`.
    """
    data = (data.quick() if options.quick else data).with_labels_hidden(options.seed)
    processes = _processes.current()
    if processes is not None:
        _processes.check_batch_sizes(pipeline, processes.count)
    with _keras_file.shared_loads():  # each file the checks read, loaded once
        _check_against_models(pipeline, data, options.seed)
    store = _store.Store(output_dir)
    # Process 0 alone writes the run directory, so it alone holds it.
    held = store.locked() if processes is None or processes.writes else contextlib.nullcontext()
    with held:
        engine = _Engine(pipeline, data, store, options, log, processes)
        pipeline.run(None, Context(engine, options, data))
        return engine.finish()


def _check_against_models(pipeline, data, seed):
    """Before any stage runs, each stage checks its arguments against the model it will
    receive, where the stages before it tell what that model is built from (an N:M
    pattern that fits no layer fails here, not after an hour of training) or how an
    `export` stage makes it (`{"tflite": ...}`; a teacher's too), and against what needs
    Keras or the data (a distillation loss's arguments).

    Raises:
        ValueError: from a stage, with `stage` and `argument` attributes.
    """
    specs, built = {}, {}

    def build(spec):
        if id(spec) not in built:
            built[id(spec)] = architectures.build(spec, data, seed)
        return built[id(spec)]

    def visit(stage, last):
        if isinstance(stage, Pipeline):
            last = stage.from_stage or last
            for child in stage.stages:
                last = visit(child, last)
            specs[stage.name] = specs.get(last)
            return last
        incoming = specs.get(stage.from_stage or last) if stage.takes_input() else None
        try:
            stage._check_before_run(data)
            for name in stage.references():
                reference = specs.get(name)
                if isinstance(reference, dict) and "tflite" in reference:
                    stage._check_reference_tflite(name, reference["tflite"])
            if isinstance(incoming, dict) and "tflite" in incoming:
                stage._check_input_tflite(incoming["tflite"])
            elif incoming is not None:
                stage._check_input_model(lambda: build(incoming), incoming)
            stage._check_layer_names(build, incoming, specs)
        except (ValueError, TypeError, ImportError) as error:
            error.stage = stage.name
            raise
        specs[stage.name] = stage._output_spec(incoming)
        return stage.name

    last = None
    for stage in pipeline.stages:
        last = visit(stage, last)


class _Engine:
    """Runs stages with resume; tracks each finished stage's model, output id and entry.

    Each stage gets a `Context` of its own (read-only): the engine holds no context, and
    a context reaches the engine only through `model`, `teacher_outputs`, `run_stage`
    and `log`.

    On several processes (`processes`, see `_processes`), every process runs the stages
    that train, in step; process 0 alone writes, and runs the stages that do not train
    (`Stage.trains`) on local copies of the models. Barriers before and after each
    stage let the others read what process 0 wrote.
    """

    def __init__(self, pipeline, data, store, options, log, processes=None):
        self.data = data
        self.store = store
        self.options = options
        self.log = log
        self.processes = processes
        self.writes = processes is None or processes.writes
        self._local_models = {}
        self._local = False  # whether the running stage gets local copies of models
        self.order = [stage.name for stage in pipeline.leaves()]
        self.total = len(self.order)
        self.models, self.fingerprints, self.entries = {}, {}, []
        self._last_of = {}  # a nested pipeline's name -> the stage it ends with
        self.last = None
        self._teacher_outputs = {}
        # The running stage's time in `teacher_outputs` and `propagated_labels`, by part.
        self._teacher_seconds = {}
        self.started = time.perf_counter()
        self._start(pipeline)

    def _start(self, pipeline):
        quick, seed = self.options.quick, self.options.seed
        # What every stage's fingerprint holds besides its own arguments and inputs: a
        # stage finished under other data, seed or library versions is redone.
        self.run_fingerprint = {
            "quick": quick,
            "seed": seed,
            "data": self.data.fingerprint,
            "versions": _versions(),
        }
        self.config_digests = {
            stage.name: _store.config_digest(stage.fingerprint(), _fingerprint_value)
            for stage in pipeline.leaves()
        }
        if not self.writes:
            self.log(f"process {self.processes.index} of {self.processes.count}")
            return
        _store.write_json(
            self.store.directory / "config.json",
            {
                "pipeline": pipeline.get_config(),
                "stages": self.order,
                "data": self.data.describe(),
                "quick": quick,
                "seed": seed,
                # For `tfkd report`, which recomputes each entry's fingerprint.
                "options": self.run_fingerprint,
                "config_digests": self.config_digests,
            },
        )
        described = self.data.describe()
        labelled = (
            f" ({described['labelled_examples']:,} labelled)"
            if "labelled_examples" in described
            else ""
        )
        self.log(
            f"tfkd pipeline: {self.total} stage{'s' * (self.total != 1)}, "
            f"data {self.data.name} "
            f"({len(self.data.x_train):,} train{labelled} / {len(self.data.x_test):,} test)"
            f"{', quick' if quick else ''}, output {self.store.directory}"
        )
        for note in described.get("notes", []):
            self.log(f"    note: {note}")

    def model(self, name):
        if name not in self.models:
            raise ValueError(
                f"No stage named {name!r} has run before this one. Finished: {sorted(self.models)}"
            )
        return self.local_model(name) if self._local else self.models[name]

    def local_model(self, name):
        """Stage `name`'s model, on this process alone: itself when one process runs, else
        a copy loaded from the stage's file without the distribution (process 0 wrote
        it; the barrier after each stage makes it visible)."""
        model = self.models[name]
        if self.processes is None or isinstance(model, TFLiteModel):
            return model
        if name not in self._local_models:
            entry = next(entry for entry in self.entries if entry["name"] == name)
            with self.processes.local():
                self._local_models[name] = self.store.load_model(name, entry)
        return self._local_models[name]

    def run_stage(self, stage, model):
        """Runs `stage` (a leaf, or a nested pipeline, whose `run` calls this for each
        child) on `model`, or loads its finished output; returns its model."""
        if isinstance(stage, Pipeline):
            if stage.from_stage:
                self.last, model = stage.from_stage, self.models[stage.from_stage]
            model, _ = stage.run(model, Context(self, self.options, self.data))
            self.models[stage.name] = model
            self.fingerprints[stage.name] = self.fingerprints.get(self.last)
            self._last_of[stage.name] = self.last
            return model
        source = stage.from_stage or self.last
        model = self.models.get(source) if stage.takes_input() else None
        fingerprint = self._fingerprint(stage, source)
        index = len(self.entries) + 1
        self._sync(f"{index} {stage.name}: start")  # process 0 wrote the stages before
        entry = self.store.finished(stage.name, fingerprint)
        if entry is not None:
            model = self._load(stage.name, entry)
            self.log(
                f"[{index}/{self.total}] {stage.name}: finished earlier, reused. {_line(entry)}"
            )
        elif self.processes is None:
            model, entry = self._run_leaf(stage, model, source, fingerprint, index)
        else:
            model, entry = self._run_leaf_on_processes(stage, model, source, fingerprint, index)
        self.entries.append(entry)
        # Downstream stages depend on this stage's output file itself, not only on its
        # arguments: a stage rerun (even with the same arguments) reruns what uses it.
        self.models[stage.name], self.fingerprints[stage.name] = model, _store.output_id(entry)
        self.last = stage.name
        return model

    def _load(self, name, entry):
        if self.processes is not None:
            # Every process must create the variables from the same random state.
            keras.utils.set_random_seed(self.options.seed)
        return self.store.load_model(name, entry)

    def _sync(self, name):
        if self.processes is not None:
            self.processes.barrier(name)

    def _run_leaf_on_processes(self, stage, model, source, fingerprint, index):
        """`_run_leaf` on one of several processes: process 0 runs the stage (with the
        others, when it trains) and writes it; the others then read its entry."""
        keras.utils.set_random_seed(self.options.seed)  # the same on every process
        if self.writes:
            if stage.trains:
                model, entry = self._run_leaf(stage, model, source, fingerprint, index)
            else:
                self._local = True
                try:
                    with self.processes.local():
                        incoming = self.local_model(source) if model is not None else None
                        model, entry = self._run_leaf(stage, incoming, source, fingerprint, index)
                finally:
                    self._local = False
        elif stage.trains:
            self.log(f"[{index}/{self.total}] {stage.name} ({stage.kind}): started")
            directory = self.store.directory / "processes" / f"process-{self.processes.index}"
            context = Context(self, self.options, self.data, directory=directory / stage.name)
            context.directory.mkdir(parents=True, exist_ok=True)
            try:
                model, _ = _unpack(stage, stage.run(model, context))
                _check_finite(model)
            except Exception as error:
                raise StageError(stage, error, self.store.directory) from error
            # Saving is collective (process 0 saves too), so this process saves a copy.
            models.save(model, context.directory / "model.keras")
        self._sync(f"{index} {stage.name}: written")
        written = self.store.finished(stage.name, fingerprint)
        if written is None:
            raise RuntimeError(
                f"Stage {stage.name!r}: process 0 finished it, but its entry is not in "
                f"{self.store.directory}: do all processes share that directory?"
            )
        if not self.writes:
            self.log(f"[{index}/{self.total}] {stage.name}: written by process 0")
        if not stage.trains and written["format"] == "keras":
            # A Keras model from a stage that ran on process 0 alone: every process loads
            # it, so that it is replicated like the models that trained.
            model = self._load(stage.name, written)
        return model, written

    def _run_leaf(self, stage, model, source, fingerprint, index):
        self.log(f"[{index}/{self.total}] {stage.name} ({stage.kind}): started")
        context = Context(
            self,
            self.options,
            self.data,
            directory=self.store.begin(stage.name),
            log_directory=self.store.log_directory(stage.name),
        )
        start = time.perf_counter()
        self._teacher_seconds = {}
        # Every stage starts from the run's seed, so that what it draws (the random
        # seeds of the layers it builds, its shuffling) does not depend on what ran
        # before it in this process: a resumed run trains what an uninterrupted one does.
        keras.utils.set_random_seed(self.options.seed)
        try:
            model, details = _unpack(stage, stage.run(model, context))
            _check_finite(model)
        except Exception as error:
            raise StageError(stage, error, self.store.directory) from error
        seconds = time.perf_counter() - start
        artifact = self.store.save_model(stage.name, model)
        path = self.store.stage_directory(stage.name) / artifact
        if self.processes is None or self._local:
            metrics = _measure.measure(model, self.data, path, keras_verbose(self.options.verbose))
        else:
            with self.processes.local():  # measured on a copy of this process's own
                measured = self.store.load_model(stage.name, {"artifact": artifact})
                metrics = _measure.measure(
                    measured, self.data, path, keras_verbose(self.options.verbose)
                )
        entry = {
            "name": stage.name,
            "stage": stage.kind,
            "input": source if stage.takes_input() else None,
            "fingerprint": fingerprint,
            "upstream": self._upstream(stage, source),
            "artifact": artifact,
            "format": "tflite" if isinstance(model, TFLiteModel) else "keras",
            "seconds": round(seconds, 2),
            "teacher_seconds": round(sum(self._teacher_seconds.values()), 2),
            **self._teacher_parts(),
            **metrics,
            "details": details,
        }
        # A stage may know better (QAT's extra variables are no parameters); a .tflite
        # has the parameters of the model it was exported from.
        while source in self._last_of:  # a nested pipeline's: its last stage's
            source = self._last_of[source]
        source_entry = next((e for e in self.entries if e["name"] == source), {})
        entry["parameters"] = details.pop("parameters", None) or entry["parameters"]
        entry["parameters"] = entry["parameters"] or source_entry.get("parameters")
        entry = self.store.finish(stage.name, entry)
        self.log(f"[{index}/{self.total}] {stage.name}: done in {seconds:.1f} s. {_line(entry)}")
        return model, entry

    def teacher_outputs(self, name, inputs=None, inputs_key="train", features=False):
        """A stage's outputs on `inputs`, computed once per run and kept in `cache/`; a file
        there is used only if it was written for this model (architecture and weights)
        and these inputs, and holds one finite row per input. With `features`, the input
        of the model's last Dense layer instead (`_graph.head_input_model`)."""
        what = "features" if features else "outputs"
        key = f"{name}-{self.fingerprints[name]}-{inputs_key}" + ("-features" if features else "")
        if key not in self._teacher_outputs:
            inputs = self.data.x_train if inputs is None else inputs
            # On several processes, each predicts with a copy of its own (`predict` needs
            # every process otherwise); process 0 alone keeps the file.
            model = self.local_model(name)
            if features:
                model = _graph.head_input_model(model)
            path = self.store.directory / "cache" / f"outputs-{key}.npz"

            def compute():
                self.log(f"    computing {name}'s {what} on {len(inputs):,} examples")
                verbose = keras_verbose(self.options.verbose)
                local = self.processes.local() if self.processes else contextlib.nullcontext()
                started = time.perf_counter()
                with local:
                    outputs = self._run_teacher(name, model, inputs, verbose)
                elapsed = time.perf_counter() - started
                self._spent(what, elapsed)
                self.log(f"    {name}'s {what} took {elapsed:.1f} s")
                return outputs

            stamp = teacher_cache.fingerprint(inputs, model, [teacher_cache.OUTPUT])
            self._teacher_outputs[key] = self._computed_once(path, stamp, len(inputs), compute)
        return self._teacher_outputs[key]

    def propagated_labels(self, name, neighbours, alpha):
        """The training labels spread along a graph of stage `name`'s features on the
        training inputs (`teacher_outputs(features=True)`, `tfkd.distill.LabelGraph`):
        `(probabilities, held_out)`, the `(examples, classes)` probabilities of
        `propagate`, and the class each labelled example gets from the other folds'
        labels (`held_out_labels`, `HELD_OUT_FOLDS` folds; `UNLABELED` elsewhere).
        Computed once per run and kept in `cache/` like the outputs; its time counts as
        the teachers' (`teacher_seconds`)."""
        key = f"{name}-{self.fingerprints[name]}-propagated-{neighbours}-{alpha}"
        if key not in self._teacher_outputs:
            features = self.teacher_outputs(name, features=True)[teacher_cache.OUTPUT]
            labels = self.data.y_train
            path = self.store.directory / "cache" / f"outputs-{key}.npz"
            folds = min(HELD_OUT_FOLDS, int(np.sum(labels != UNLABELED)))
            stamp = _hashing.json_sha256(
                [
                    _hashing.array_sha256(features),
                    _hashing.array_sha256(labels),
                    self.data.num_classes,
                    neighbours,
                    alpha,
                    folds,
                    self.options.seed,
                ]
            )

            def compute():
                self.log(f"    propagating the labels along a graph of {name}'s features")
                started = time.perf_counter()
                classes = self.data.num_classes
                graph = LabelGraph(features, neighbours=neighbours)
                probabilities = graph.propagate(labels, classes, alpha=alpha)
                held_out = np.full(len(labels), UNLABELED)
                if folds >= 2:
                    held_out = graph.held_out_labels(
                        labels, classes, folds=folds, seed=self.options.seed, alpha=alpha
                    )
                elapsed = time.perf_counter() - started
                self._spent("propagation", elapsed)
                self.log(f"    propagating the labels took {elapsed:.1f} s")
                return {teacher_cache.OUTPUT: probabilities, HELD_OUT: held_out.astype("float32")}

            self._teacher_outputs[key] = self._computed_once(path, stamp, len(labels), compute)
        found = self._teacher_outputs[key]
        return found[teacher_cache.OUTPUT], found[HELD_OUT].astype(np.int64)

    def _spent(self, part, seconds):
        self._teacher_seconds[part] = self._teacher_seconds.get(part, 0.0) + seconds

    def _teacher_parts(self):
        """`teacher_seconds_by_part` for the stage's entry when its teacher time has more
        parts than the outputs (`features`, `propagation`), else nothing."""
        if set(self._teacher_seconds) <= {"outputs"}:
            return {}
        parts = {part: round(value, 2) for part, value in self._teacher_seconds.items()}
        return {"teacher_seconds_by_part": parts}

    def _computed_once(self, path, stamp, rows, compute):
        """`compute()`, or what `cache/` holds for `stamp` at `path` (`rows` finite rows);
        written there by the process that writes."""
        if not self.writes:
            return compute()
        return teacher_cache.load_or_compute(path, stamp, rows, compute)

    def _run_teacher(self, name, model, inputs, verbose):
        """`model`'s outputs on `inputs`: for images (uint8 or float arrays) on the TensorFlow
        backend, through LiteRT (a float32 `.tflite` checked against Keras, 2.78x faster than
        Keras for the default pipeline's teacher); else, or when the model does not convert,
        through Keras. Token ids (text teachers) keep Keras: LiteRT was not measured on them."""
        images = isinstance(inputs, np.ndarray) and (
            inputs.dtype == np.uint8 or inputs.dtype.kind == "f"
        )
        if keras.backend.backend() == "tensorflow" and images:
            try:
                return teacher_cache.teacher_outputs(
                    model, inputs, verbose=verbose, runtime="litert"
                )
            except ValueError as error:  # a layer LiteRT cannot convert, or disagrees
                first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
                self.log(f"    {name} through LiteRT failed ({first_line}); using Keras")
        return teacher_cache.teacher_outputs(model, inputs, verbose=verbose)

    def _upstream(self, stage, source):
        """`{stage name: output id}` of the stages whose models this one read."""
        names = ([source] if stage.takes_input() and source else []) + stage.references()
        return {name: self.fingerprints.get(name) for name in names}

    def _fingerprint(self, stage, source):
        return _store.fingerprint(
            stage.kind,
            self.config_digests[stage.name],
            self._upstream(stage, source),
            self.run_fingerprint,
        )

    def finish(self):
        result = report.Report(self.entries, self.data.describe())
        if not self.writes:
            return result
        result.write(self.store.directory)
        elapsed = time.perf_counter() - self.started
        self.log(f"Finished in {elapsed:.0f} s ({elapsed / 60:.1f} min).")
        self.log(f"Report: {self.store.directory / 'report.md'}")
        return result


def _versions():
    import tfkd

    try:
        tensorflow = importlib.metadata.version("tensorflow")
    except importlib.metadata.PackageNotFoundError:
        tensorflow = None
    return {
        "tfkd": tfkd.__version__,
        "keras": keras.__version__,
        "tensorflow": tensorflow,
        "backend": keras.backend.backend(),
    }


def _unpack(stage, output):
    model, details = output if isinstance(output, tuple) else (output, {})
    if not isinstance(model, keras.Model | TFLiteModel) or not isinstance(details, dict):
        raise TypeError(
            f"Stage {stage.name!r} must return a Keras model or a `tfkd.TFLiteModel`, or a "
            f"`(model, details_dict)` tuple. Received: {type(output).__name__} "
            f"({type(model).__name__}, {type(details).__name__})"
        )
    return model, details


def _fingerprint_value(value):
    """Keras models and arrays (Python API) are fingerprinted by their contents."""
    if isinstance(value, np.ndarray):
        return _hashing.array_sha256(value)
    if isinstance(value, keras.Model):
        return _graph.model_sha256(value)
    if isinstance(value, Stage):
        return {"stage": value.kind, **value.get_config()}
    if isinstance(value, pathlib.PurePath):
        return str(value)
    return repr(value)


def _line(entry):
    parts = [f"accuracy {entry['accuracy']:.4f}", f"{entry['bytes']:,} bytes"]
    if entry.get("parameters"):
        parts.append(f"{entry['parameters']:,} parameters")
    parts.append(f"{entry['latency_ms']:.3f} ms/example")
    return ", ".join(parts)


def _check_finite(model):
    """NaN weights are an error even when the loss hid them (Keras's JAX sparse
    cross-entropy reports a finite loss for NaN logits)."""
    if not isinstance(model, keras.Model):
        return
    bad = sorted({path.split("/")[0] for path in _checks.non_finite_weights(model)})
    if bad:
        raise FloatingPointError(
            f"Training produced non-finite weights in layer(s) {bad}. Check the inputs for "
            "NaN/inf and lower the learning rate."
        )

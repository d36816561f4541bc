"""`Report`: one row per stage's model; written as report.md, report.json and report.png."""

import json
import os
import pathlib

from tfkd import _atomic, _hashing, metrics
from tfkd.pipeline import _store

# Classes listed as having lost the most, and the most classes a confusion-matrix
# picture shows.
LARGEST_DROPS = 3
CONFUSION_PICTURE_CLASSES = 30


class Report:
    """The rows of a pipeline run: what each stage's model costs and how accurate it is.

    Attributes:
        rows: one dict per finished stage, in pipeline order: `name`, `stage`,
            `format` (`"keras"` or `"tflite"`), `parameters`, `bytes` (the file on
            disk), `accuracy` (test split; `.tflite` files through `tfkd.TFLiteModel`),
            `latency_ms` (batch 1, median), `seconds` (the stage's own run time),
            `teacher_seconds` (the part of it spent computing teachers' outputs, 0 when
            they came from the run's cache or the stage has no teacher; `None` for a
            stage that an older tfkd finished), and when that time had more parts
            than the outputs, `teacher_seconds_by_part` (`outputs`, `features` and
            `propagation` seconds, for a stage with `propagation`),
            `classification` (`tfkd.metrics.classification_report` on the test
            split: precision, recall and F1 per class, the confusion matrix).
        data: what the rows were measured on.
        notes: what stages reported besides their figures (layers an N:M pattern
            left dense), as `"stage: note"` lines, after the data's (`"data: note"`,
            e.g. a quick run that kept fewer labels per class).
    """

    def __init__(self, rows, data, notes=()):
        self.rows = _with_comparisons([_summary(row) for row in rows])
        self.data = data
        self.notes = [f"data: {note}" for note in data.get("notes", [])] + [
            f"{row['name']}: {note}"
            for row in rows
            for note in (row.get("details") or {}).get("notes", [])
        ]
        self.notes += list(notes)

    @classmethod
    def load(cls, directory):
        """The report of a run directory, from its finished stages (also of a partial run).

        Raises:
            TypeError: `directory` is not a path.
            ValueError: `directory` holds no run (no readable `config.json`).
        """
        if not isinstance(directory, str | os.PathLike):
            raise TypeError(
                "`directory` must be the output directory of a pipeline run. "
                f"Received: directory={directory!r} of type {type(directory).__name__}"
            )
        directory = pathlib.Path(directory)
        config_path = directory / "config.json"
        if not config_path.is_file():
            raise ValueError(
                f"Not a tfkd pipeline output directory (no config.json). Received: {directory}. "
                "Pass the `output_dir` of a run (`tfkd run --output`)."
            )
        try:
            config = json.loads(config_path.read_text())
            stages, data = config["stages"], config["data"]
            _check_run_config(stages, data, config)
        except (ValueError, KeyError, TypeError, RecursionError) as error:
            raise ValueError(
                f"The run's config.json is damaged ({type(error).__name__}: {error}). "
                f"Received: directory={os.fspath(directory)!r}. Rerun the pipeline into it "
                "to write it again."
            ) from None
        store = _store.Store(directory)
        stored = store.entries(stages)
        entries, notes = _verified(store, stored, config)
        left_out = {entry["name"] for entry in stored} - {entry["name"] for entry in entries}
        entries, stale = _current(entries, left_out)
        return cls(entries, data, notes + stale)

    def markdown(self):
        lines = [
            "# tfkd pipeline report",
            "",
            f"Data: {self.data['name']}, {self.data['train_examples']:,} training"
            f"{_labelled(self.data)} and {self.data['test_examples']:,} test examples. "
            "Accuracy is top-1 on the test "
            "examples; `.tflite` rows are measured through the LiteRT interpreter "
            "(`tfkd.TFLiteModel`). Latency: one example (batch 1), median, this machine.",
            "",
            "| model | stage | format | parameters | bytes | x smaller | accuracy | vs first | "
            "latency ms | stage s |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in self.rows:
            lines.append(
                f"| {row['name']} | {row['stage']} | {row['format']} | "
                f"{_parameters(row)} | {row['bytes']:,} | {_ratio(row['size_ratio'])} | "
                f"{row['accuracy']:.4f} | {_points(row['accuracy_delta'])} | "
                f"{row['latency_ms']:.3f} | {row['seconds']:.1f} |"
            )
        lines += [
            "",
            "*x smaller*: bytes of the largest file of the same format divided by this file's. "
            "*vs first*: accuracy points against the first row.",
            "",
            *(["Notes:", "", *[f"- {note}" for note in self.notes], ""] if self.notes else []),
            "![accuracy vs size](report.png)",
            *self._per_class_lines(),
        ]
        return "\n".join(lines) + "\n"

    def _compared(self):
        """`(first row, last row)` when both have per-class results on the same classes."""
        if len(self.rows) < 2:
            return None
        first, last = self.rows[0], self.rows[-1]
        if not (first.get("classification") and last.get("classification")):
            return None
        if len(first["classification"]["classes"]) != len(last["classification"]["classes"]):
            return None
        return first, last

    def _per_class_lines(self):
        compared = self._compared()
        if compared is None:
            return []
        first, last = compared
        before, after = first["classification"], last["classification"]
        drops = metrics.largest_drops(before, after, LARGEST_DROPS)
        lost = (
            "; ".join(
                f"{drop['name']} {drop['before']:.3f} -> {drop['after']:.3f}" for drop in drops
            )
            if drops
            else "none (no class's recall fell)"
        )
        lines = [
            "",
            f"## Per class: {last['name']} against {first['name']}",
            "",
            f"Classes that lost the most recall: {lost}.",
            "",
            f"| class | examples | recall {first['name']} | recall {last['name']} | change | "
            f"precision {last['name']} | F1 {last['name']} |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for old, new in zip(before["classes"], after["classes"]):
            lines.append(
                f"| {new['name']} | {new['support']:,} | {old['recall']:.3f} | "
                f"{new['recall']:.3f} | {_points(new['recall'] - old['recall'])} | "
                f"{new['precision']:.3f} | {new['f1']:.3f} |"
            )
        for average in ("macro", "weighted"):
            lines.append(
                f"| *{average} average* | | {before[average]['recall']:.3f} | "
                f"{after[average]['recall']:.3f} | "
                f"{_points(after[average]['recall'] - before[average]['recall'])} | "
                f"{after[average]['precision']:.3f} | {after[average]['f1']:.3f} |"
            )
        if _pictured(after):
            lines += ["", f"![confusion matrix of {last['name']}](confusion.png)"]
        return lines

    def to_dict(self):
        return {"data": self.data, "rows": self.rows, "notes": self.notes}

    def write(self, directory):
        """Writes report.md, report.json and report.png into `directory` (atomically)."""
        directory = pathlib.Path(directory)
        _atomic.write_bytes(directory / "report.md", self.markdown().encode())
        _store.write_json(directory / "report.json", self.to_dict())
        if self.rows:
            self.plot(directory / "report.png")
        compared = self._compared()
        if compared is not None and _pictured(compared[1]["classification"]):
            _plot_confusion(compared[1], directory / "confusion.png")

    def plot(self, path):
        """Accuracy against bytes on disk (log scale), each point labelled with its latency."""
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot, ticker

        figure, axes = pyplot.subplots(figsize=(8, 5), dpi=120)
        # .keras labels above their points and .tflite labels below, so that a model and
        # its file (same accuracy, similar size) stay readable.
        for file_format, marker, offset in (("keras", "o", (6, 4)), ("tflite", "s", (6, -22))):
            rows = [row for row in self.rows if row["format"] == file_format]
            if not rows:
                continue
            axes.scatter(
                [row["bytes"] for row in rows],
                [row["accuracy"] for row in rows],
                marker=marker,
                s=60,
                label=f".{file_format}",
            )
            for row in rows:
                axes.annotate(
                    f"{row['name']}\n{row['latency_ms']:.3g} ms",
                    (row["bytes"], row["accuracy"]),
                    textcoords="offset points",
                    xytext=offset,
                    fontsize=8,
                )
        axes.set_xscale("log")
        # Sizes as "100 KB" / "1 MB", in plain text (no mathtext exponents).
        axes.xaxis.set_major_formatter(ticker.FuncFormatter(_bytes_label))
        axes.xaxis.set_minor_formatter(ticker.NullFormatter())
        axes.yaxis.set_major_formatter(ticker.FormatStrFormatter("%.3f"))
        axes.margins(x=0.2, y=0.12)
        axes.set_xlabel("size on disk (log scale)")
        axes.set_ylabel(f"test accuracy ({self.data['name']})")
        axes.set_title("Accuracy vs size; labels: latency per example (batch 1)")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(loc="lower right")
        figure.tight_layout()
        with _atomic.writing(path) as temporary:
            figure.savefig(temporary, format="png")
        pyplot.close(figure)


def _pictured(classification):
    return (
        "confusion_matrix" in classification
        and len(classification["classes"]) <= CONFUSION_PICTURE_CLASSES
    )


def _plot_confusion(row, path):
    """The row's confusion matrix, each true class's row as fractions of its examples."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from matplotlib import pyplot

    classification = row["classification"]
    counts = np.asarray(classification["confusion_matrix"], dtype=float)
    fractions = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    names = [c["name"] for c in classification["classes"]]
    size = max(5.0, 0.45 * len(names) + 2)
    figure, axes = pyplot.subplots(figsize=(size, size), dpi=120)
    axes.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    for (true, predicted), count in np.ndenumerate(counts):
        if count:
            color = "white" if fractions[true, predicted] > 0.5 else "black"
            axes.text(
                predicted, true, f"{int(count)}", ha="center", va="center", fontsize=7, color=color
            )
    axes.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    axes.set_yticks(range(len(names)), names, fontsize=8)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(f"{row['name']}: accuracy {classification['accuracy']:.4f}")
    figure.tight_layout()
    with _atomic.writing(path) as temporary:
        figure.savefig(temporary, format="png")
    pyplot.close(figure)


def _labelled(data):
    """`" (1,000 labelled: 100 per class)"` when labels were hidden, else nothing."""
    if "labelled_examples" not in data:
        return ""
    per_class = data.get("labelled_per_class")
    per_class = f": {per_class:,} per class" if per_class else ""
    return (
        f" ({data['labelled_examples']:,} labelled{per_class}; stages without a teacher use those)"
    )


def _bytes_label(value, _=None):
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if value >= size:
            return f"{value / size:g} {unit}"
    return f"{value:g} B"


def _check_run_config(stages, data, config):
    """Raises a TypeError where a run's `config.json` holds what tfkd does not write (before,
    an edited one stopped `tfkd report` with Python's error)."""
    counts = ("train_examples", "test_examples")
    wrong = [
        key
        for key, ok in (
            ("stages", isinstance(stages, list) and all(isinstance(n, str) for n in stages)),
            ("data", isinstance(data, dict) and isinstance(data.get("name"), str)),
            ("data counts", isinstance(data, dict) and all(_count(data.get(k)) for k in counts)),
            ("data notes", isinstance(data, dict) and isinstance(data.get("notes", []), list)),
            (
                "data labels",
                isinstance(data, dict)
                and all(
                    _count(data[key]) or data[key] is None
                    for key in ("labelled_examples", "labelled_per_class")
                    if key in data
                ),
            ),
            ("config_digests", isinstance(config.get("config_digests"), dict | None)),
            ("options", isinstance(config.get("options"), dict | None)),
        )
        if not ok
    ]
    if wrong:
        raise TypeError(f"{', '.join(wrong)} of another type than tfkd writes")


def _count(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _verified(store, entries, config):
    """The entries whose file still has the checksum measured, and whose fingerprint is the
    one the directory's config (`config.json`, the last run's) gives them; a note for each
    entry left out."""
    kept, notes = [], []
    digests, options = config.get("config_digests"), config.get("options")
    for entry in entries:
        name = entry["name"]
        path = store.stage_directory(name) / entry.get("artifact", "")
        if not path.is_file() or _hashing.file_sha256(path) != entry.get("sha256"):
            notes.append(
                f"{name}: left out: its file {path.name} is missing or changed since it was "
                "measured. Rerun the pipeline to measure it again."
            )
            continue
        if digests is not None and options is not None:
            expected = _store.fingerprint(
                entry["stage"], digests.get(name), entry.get("upstream", {}), options
            )
            if entry.get("fingerprint") != expected:
                notes.append(
                    f"{name}: left out: it finished under other arguments, data, seed or "
                    "library versions than the last run's (config.json). Rerun the pipeline "
                    "to redo it."
                )
                continue
        kept.append(entry)
    return kept, notes


def _current(entries, left_out):
    """Drops entries left from an earlier run whose inputs have been redone since (or are
    being redone: a rerun stopped in them, or were left out: `left_out`, their names);
    returns the others and a note for each dropped one. Before, they were dropped with
    no note."""
    outputs, current, notes, left_out = {}, [], [], set(left_out)
    found = {entry["name"] for entry in entries}
    for entry in entries:
        upstream = entry.get("upstream", {})
        # A nested pipeline's name has no entry: its output is its last stage's.
        known = set(outputs.values())
        changed = [
            name
            for name, identity in upstream.items()
            if outputs.get(name) != identity and (name in found or identity not in known)
        ]
        if not changed:
            current.append(entry)
            outputs[entry["name"]] = _store.output_id(entry)
            continue
        left_out |= {entry["name"]}
        name = changed[0]
        if name in left_out:
            why = f"its input {name} is left out of this report too (see its note)"
        elif name not in found:
            why = f"its input {name} has not finished since (a rerun stopped there)"
        else:
            why = f"its input {name} was redone since it ran"
        notes.append(f"{entry['name']}: left out: {why}. Rerun the pipeline to redo it.")
    return current, notes


def _summary(entry):
    keys = (
        "name",
        "stage",
        "format",
        "parameters",
        "nonzero_parameters",
        "bytes",
        "accuracy",
        "classification",
    )
    summary = {key: entry.get(key) for key in keys} | {
        "latency_ms": entry.get("latency_ms"),
        "seconds": entry.get("seconds"),
        "teacher_seconds": entry.get("teacher_seconds"),
        "artifact": f"stages/{entry['name']}/{entry['artifact']}",
    }
    if "teacher_seconds_by_part" in entry:
        summary["teacher_seconds_by_part"] = entry["teacher_seconds_by_part"]
    return summary


def _with_comparisons(rows):
    if not rows:
        return rows
    largest = {}
    for row in rows:
        largest[row["format"]] = max(largest.get(row["format"], 0), row["bytes"])
    first = _unrounded_accuracy(rows[0])
    for row in rows:
        row["size_ratio"] = largest[row["format"]] / row["bytes"]
        row["accuracy_delta"] = _unrounded_accuracy(row) - first
    return rows


def _unrounded_accuracy(row):
    """The row's accuracy before the entry rounded it to 4 decimals, from its
    classification report where it has one: the difference of two rounded figures is off
    by up to a unit in the 4th decimal (+1.66 points shown for 38/60 - 37/60)."""
    classification = row.get("classification")
    exact = classification.get("accuracy") if isinstance(classification, dict) else None
    if isinstance(exact, float) and abs(exact - row["accuracy"]) <= 5e-5:
        return exact
    return row["accuracy"]


def _parameters(row):
    total, nonzero = row["parameters"], row["nonzero_parameters"]
    if total is None:
        return ""
    if nonzero is not None and nonzero < 0.9 * total:
        return f"{total:,} ({nonzero:,} nonzero)"
    return f"{total:,}"


def _ratio(value):
    return f"{value:.1f}x"


def _points(value):
    return f"{100 * value:+.2f}"

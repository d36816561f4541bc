"""Classify tweets with the exported student: only the `.tflite`, `vocab.txt` and LiteRT.

Needs numpy and `ai-edge-litert` (`pip install ai-edge-litert`), not TensorFlow,
Keras or tfkd's package: the tokenizer is read from the single file `wordpiece.py`
(pure Python) that a pipeline's `export` stage writes beside the `.tflite` (with
`vocab.txt` and `tokenizer.json`, whose class names it then uses), else from
`tfkd/text/_wordpiece.py`, which can be copied next to this script.

    python examples/tweets_tflite_predict.py MODEL.tflite VOCAB.txt "text" ["text" ...]
    tfkd run examples/pipeline_tweets.yaml, then:
    python examples/tweets_tflite_predict.py runs/pipeline_tweets/stages/int8/model.tflite \
        runs/pipeline_tweets/stages/int8/vocab.txt "text"
"""

import argparse
import importlib.util
import json
import pathlib
import sys

import numpy as np

CLASS_NAMES = ("negative", "neutral", "positive")
_HERE = pathlib.Path(__file__).resolve().parent
_TOKENIZER_FILES = (_HERE / "_wordpiece.py", _HERE.parent / "tfkd" / "text" / "_wordpiece.py")


def load_tokenizer_class(model_dir=None):
    """`WordPieceTokenizer`, loaded from its file without importing tfkd (no TensorFlow):
    the `wordpiece.py` beside the model first."""
    beside = (pathlib.Path(model_dir) / "wordpiece.py",) if model_dir else ()
    for path in beside + _TOKENIZER_FILES:
        if path.is_file():
            spec = importlib.util.spec_from_file_location("_wordpiece", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module.WordPieceTokenizer
    raise FileNotFoundError(
        f"The tokenizer file is in none of {[str(p) for p in _TOKENIZER_FILES]}."
    )


class TweetClassifier:
    """A `.tflite` text classifier whose input is padded WordPiece token ids."""

    def __init__(self, model_path, vocabulary_path):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(model_path))
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        sequence_length = int(self.input["shape"][1])
        model_dir = pathlib.Path(model_path).parent
        self.tokenizer = load_tokenizer_class(model_dir)(
            vocabulary_path, sequence_length=sequence_length
        )
        settings = model_dir / "tokenizer.json"
        self.class_names = CLASS_NAMES
        if settings.is_file():
            self.class_names = tuple(json.loads(settings.read_text())["class_names"])
        self._batch = None

    def logits(self, texts):
        ids = self.tokenizer(texts).astype(self.input["dtype"])
        if len(ids) != self._batch:
            self.interpreter.resize_tensor_input(self.input["index"], list(ids.shape))
            self.interpreter.allocate_tensors()
            self._batch = len(ids)
        self.interpreter.set_tensor(self.input["index"], ids)
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self.output["index"])
        scale, zero_point = self.output["quantization"]
        if out.dtype.kind != "f" and scale:
            out = (out.astype(np.float32) - zero_point) * scale
        return out.astype(np.float32)

    def predict(self, texts):
        """`[(class name, probability), ...]`, one per text."""
        logits = self.logits(texts)
        probabilities = np.exp(logits - logits.max(-1, keepdims=True))
        probabilities /= probabilities.sum(-1, keepdims=True)
        return [(self.class_names[row.argmax()], float(row.max())) for row in probabilities]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("vocabulary")
    parser.add_argument("texts", nargs="+")
    args = parser.parse_args(argv)
    classifier = TweetClassifier(args.model, args.vocabulary)
    for text, (label, probability) in zip(args.texts, classifier.predict(args.texts)):
        print(f"{label:8s} {probability:.3f}  {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

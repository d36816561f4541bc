"""Runs a `.tflite` file once in the TFLM interpreter (the `tflite-micro` package), in a
process of its own: TFLM ends its process with a segmentation fault when the tensor arena
is too small, and a hostile file must not take tfkd's process with it. Run as a file (it
imports numpy and tflite-micro only, not tfkd, whose import loads TensorFlow).

    python tfkd/export/_micro_worker.py MODEL ARENA_BYTES [INPUTS.npy OUTPUTS.npy]

Prints `ok` when the model runs with that arena (on the inputs, one example at a time,
their outputs saved; else on zeros), `failed: ...` otherwise.
"""

import os
import sys

# Run as a file, Python puts this folder first on the path, where `tflite.py` and others
# would shadow packages of the same name.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or ".") != _HERE]

import numpy as np  # noqa: E402


def run(model, arena, inputs):
    """The model's outputs on `inputs` (or on one example of zeros), in order."""
    from tflite_micro.python.tflite_micro import runtime

    interpreter = runtime.Interpreter.from_bytes(model, arena_size=arena)
    details = interpreter.get_input_details(0)
    if inputs is None:
        inputs = np.zeros((1, *details["shape"][1:]), details["dtype"])
    outputs = []
    for example in inputs:
        interpreter.set_input(example[None].astype(details["dtype"]), 0)
        interpreter.invoke()
        outputs.append(np.array(interpreter.get_output(0))[0])
    return np.stack(outputs)


def main(argv):
    path, arena = argv[0], int(argv[1])
    with open(path, "rb") as file:
        model = file.read()
    inputs = np.load(argv[2], allow_pickle=False) if len(argv) > 2 else None
    try:
        outputs = run(model, arena, inputs)
    except (RuntimeError, ValueError) as error:
        print(f"failed: {error}", flush=True)
        return 3
    if len(argv) > 3:
        np.save(argv[3], outputs)
    print("ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

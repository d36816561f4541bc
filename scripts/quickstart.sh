#!/usr/bin/env bash
# tfkd's main job, end to end on bundled data: the default pipeline on Fashion-MNIST with 100
# labels a class. The ImageNet MobileNetV2 is fine-tuned by tfkd.transfer on the 1,000 labels,
# distilled with the 59,000 unlabelled images into a CNN with 14x fewer parameters, pruned,
# trained quantization-aware, exported to a fully int8 .tflite and bundled for microcontrollers;
# every model and file is measured, and the report's path is printed at the end.
# Arguments go to `tfkd run`: `--quick` is a short smoke run; `--output DIR`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh" litert,micro
tfkd run examples/pipeline_fashion_mnist.yaml "$@"

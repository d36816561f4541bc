#!/usr/bin/env bash
# tfkd's main job, end to end on bundled data: distil the bundled Fashion-MNIST
# teacher into a 20x smaller student and compare it with the student trained alone.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
python examples/distill_fashion_mnist.py "$@"

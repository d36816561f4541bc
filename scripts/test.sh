#!/usr/bin/env bash
# Installs tfkd with its test dependencies and runs the test suite: everything on
# the TensorFlow backend, then the backend-agnostic distillation, pruning, QAT, transfer and
# pipeline tests on JAX.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh" test
echo "== pytest, KERAS_BACKEND=tensorflow"
KERAS_BACKEND=tensorflow python -m pytest -q "$@"
jax_tests=(tests/distill tests/prune tests/quantize tests/transfer tests/pipeline/test_pipeline.py)
echo "== pytest ${jax_tests[*]}, KERAS_BACKEND=jax"
KERAS_BACKEND=jax python -m pytest -q "${jax_tests[@]}" "$@"

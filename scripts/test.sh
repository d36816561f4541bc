#!/usr/bin/env bash
# Installs tfkd with its test dependencies and runs the test suite: everything on
# the TensorFlow backend, and, side by side with it, the backend-agnostic distillation,
# pruning, QAT, transfer and pipeline tests on JAX (much of a test's time is single-threaded
# Python, so two processes use two cores better than one). Exits non-zero if either fails.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh" test
jax_tests=(tests/distill tests/prune tests/quantize tests/transfer tests/pipeline/test_pipeline.py)
jax_log="$(mktemp)"
trap 'rm -f "$jax_log"' EXIT
KERAS_BACKEND=jax python -m pytest -q -p no:cacheprovider "${jax_tests[@]}" "$@" >"$jax_log" 2>&1 &
jax_pid=$!
echo "== pytest, KERAS_BACKEND=tensorflow"
tf_status=0
KERAS_BACKEND=tensorflow python -m pytest -q "$@" || tf_status=$?
jax_status=0
wait "$jax_pid" || jax_status=$?
echo "== pytest ${jax_tests[*]}, KERAS_BACKEND=jax (ran alongside)"
cat "$jax_log"
if [ "$tf_status" -ne 0 ] || [ "$jax_status" -ne 0 ]; then
  echo "FAILED: TensorFlow pass exit $tf_status, JAX pass exit $jax_status"
  exit 1
fi

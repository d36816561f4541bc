#!/usr/bin/env bash
# Installs tfkd with its test dependencies and runs the test suite: everything on
# the TensorFlow backend, and, side by side with it, the backend-agnostic distillation,
# pruning, QAT, transfer and pipeline tests on JAX, and the distillation, pruning and QAT
# tests on PyTorch. Much of a test's time is single-threaded Python, so the TensorFlow
# pass runs as two processes over disjoint folders, next to the JAX and PyTorch passes:
# four processes keep two cores busy to the end.
# Arguments go to every pytest (e.g. `-m slow` for the slow tests, `-x`). Prints each
# pass's log and the elapsed time; exits non-zero if any pass fails.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh" test
# PyTorch for the PyTorch pass: 2.13.0 is the CPU build that pip finds on this project's
# machines (elsewhere pip downloads PyPI's build of it).
python -m pip install -q "torch==2.13.0"
start=$SECONDS
# On JAX and PyTorch: not the data-parallel tests (they start their own TensorFlow and JAX
# processes) nor those marked heavy (real-data accuracy, whole pipelines), which the
# TensorFlow pass runs; `-m heavy` from the caller runs those on every backend.
left_to_tf=(--ignore=tests/distill/test_distribution.py -m "not slow and not heavy")
jax_tests=(tests/distill tests/prune tests/quantize tests/transfer tests/pipeline/test_pipeline.py "${left_to_tf[@]}")
torch_tests=(tests/distill tests/prune tests/quantize "${left_to_tf[@]}")
tf_first=(tests/pipeline tests/export tests/text tests/examples tests/datasets)
# The second TensorFlow process runs every other test, so a new test file cannot be missed.
tf_second=(tests "${tf_first[@]/#/--ignore=}")
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT

# With a marker or -k from the caller, a pass may select nothing (pytest's exit 5): not a failure.
no_tests_ok() { local status=$1; [ "$status" -eq 5 ] && [ "$extra_args" -gt 0 ] && status=0; return "$status"; }
extra_args=$#

run_pass() {  # run_pass NAME BACKEND PYTEST_ARGS...
  local name=$1 backend=$2 status=0
  shift 2
  KERAS_BACKEND=$backend python -m pytest -q -p no:cacheprovider --durations=15 "$@" \
    >"$logs/$name" 2>&1 || status=$?
  no_tests_ok "$status"
}

run_pass jax jax "${jax_tests[@]}" "$@" &
jax_pid=$!
run_pass torch torch "${torch_tests[@]}" "$@" &
torch_pid=$!
run_pass tensorflow_2 tensorflow "${tf_second[@]}" "$@" &
tf_second_pid=$!
echo "== pytest, KERAS_BACKEND=tensorflow: ${tf_first[*]}"
tf_first_status=0
KERAS_BACKEND=tensorflow python -m pytest -q -p no:cacheprovider --durations=15 "${tf_first[@]}" "$@" \
  || no_tests_ok $? || tf_first_status=$?
tf_second_status=0
wait "$tf_second_pid" || tf_second_status=$?
jax_status=0
wait "$jax_pid" || jax_status=$?
torch_status=0
wait "$torch_pid" || torch_status=$?
echo "== pytest, KERAS_BACKEND=tensorflow: tests except ${tf_first[*]} (ran alongside)"
cat "$logs/tensorflow_2"
echo "== pytest, KERAS_BACKEND=jax: ${jax_tests[*]} (ran alongside)"
cat "$logs/jax"
echo "== pytest, KERAS_BACKEND=torch: ${torch_tests[*]} (ran alongside)"
cat "$logs/torch"
echo "== test passes took $((SECONDS - start)) s"
statuses=("$tf_first_status" "$tf_second_status" "$jax_status" "$torch_status")
if [ "${statuses[*]}" != "0 0 0 0" ]; then
  echo "FAILED: TensorFlow passes exit $tf_first_status and $tf_second_status," \
    "JAX pass exit $jax_status, PyTorch pass exit $torch_status"
  exit 1
fi

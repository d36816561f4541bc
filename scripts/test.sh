#!/usr/bin/env bash
# Installs tfkd with its test dependencies and runs the test suite: everything on
# the TensorFlow backend, and, side by side with it, the backend-agnostic distillation,
# pruning, QAT, transfer and pipeline tests on JAX. Much of a test's time is
# single-threaded Python, so the TensorFlow pass runs as two processes over disjoint
# folders, next to the JAX pass: three processes keep two cores busy to the end.
# Arguments go to every pytest (e.g. `-m slow` for the slow tests, `-x`). Prints each
# pass's log and the elapsed time; exits non-zero if any pass fails.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh" test
start=$SECONDS
jax_tests=(tests/distill tests/prune tests/quantize tests/transfer tests/pipeline/test_pipeline.py)
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
  KERAS_BACKEND=$backend python -m pytest -q -p no:cacheprovider "$@" >"$logs/$name" 2>&1 || status=$?
  no_tests_ok "$status"
}

run_pass jax jax "${jax_tests[@]}" "$@" &
jax_pid=$!
run_pass tensorflow_2 tensorflow "${tf_second[@]}" "$@" &
tf_second_pid=$!
echo "== pytest, KERAS_BACKEND=tensorflow: ${tf_first[*]}"
tf_first_status=0
KERAS_BACKEND=tensorflow python -m pytest -q -p no:cacheprovider "${tf_first[@]}" "$@" \
  || no_tests_ok $? || tf_first_status=$?
tf_second_status=0
wait "$tf_second_pid" || tf_second_status=$?
jax_status=0
wait "$jax_pid" || jax_status=$?
echo "== pytest, KERAS_BACKEND=tensorflow: tests except ${tf_first[*]} (ran alongside)"
cat "$logs/tensorflow_2"
echo "== pytest, KERAS_BACKEND=jax: ${jax_tests[*]} (ran alongside)"
cat "$logs/jax"
echo "== test passes took $((SECONDS - start)) s"
if [ "$tf_first_status" -ne 0 ] || [ "$tf_second_status" -ne 0 ] || [ "$jax_status" -ne 0 ]; then
  echo "FAILED: TensorFlow passes exit $tf_first_status and $tf_second_status, JAX pass exit $jax_status"
  exit 1
fi

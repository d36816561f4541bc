#!/usr/bin/env bash
# Installs tfkd with its test dependencies and runs the test suite: everything on the
# TensorFlow backend; the distillation, pruning, QAT and transfer tests and the pipeline's
# full chain on JAX; and the distillation, pruning, QAT and clustering tests on PyTorch.
# The suite is cut into jobs (one pytest process each, over disjoint files) that run four
# at a time, longest first, each starting when another ends: much of a test's time is
# single-threaded Python, so four processes keep two cores busy to the end, and no single
# process holds everyone up.
# Arguments go to every pytest (e.g. `-m slow` for the slow tests, `-x`). Prints a line as
# each job starts and ends, then each job's log and the elapsed time; exits non-zero if
# any job fails.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh" test
# PyTorch for the PyTorch pass: 2.13.0 is the CPU build that pip finds on this project's
# machines (elsewhere pip downloads PyPI's build of it).
python -m pip install -q "torch==2.13.0"
start=$SECONDS
parallel=${TFKD_TEST_JOBS:-4}

# On JAX and PyTorch: not the data-parallel and multi-process tests (they start their own
# TensorFlow and JAX processes) nor those marked heavy (real-data accuracy, whole pipelines), which the
# TensorFlow jobs run; `-m heavy` from the caller runs those on every backend.
left_to_tf=(--ignore=tests/distill/test_distribution.py --ignore=tests/distill/test_multiprocess.py
  -m "not slow and not heavy")
# TensorFlow: the folders and files named here are split off into their own jobs; tf_others
# runs every other test, so a new test file cannot be missed.
tf_pipeline_a=(tests/pipeline/test_model_kinds.py tests/pipeline/test_prune_stage.py
  tests/pipeline/test_distill_methods.py tests/pipeline/test_text_data.py)
tf_distill_processes=(tests/distill/test_multiprocess.py tests/distill/test_distribution.py)
tf_split=(tests/pipeline tests/distill tests/prune tests/quantize tests/examples tests/export
  tests/text tests/datasets tests/test_model_kinds.py)
pipeline_rest=(tests/pipeline "${tf_pipeline_a[@]/#/--ignore=}" --ignore=tests/pipeline/test_cli.py
  --ignore=tests/pipeline/test_pipeline.py)
# NAME BACKEND PYTEST_ARGS...: seconds each took in a CI run on 21c3246, less the tests
# marked slow or heavy since (estimated from that run's durations), four at a time on 2
# cores (printed as each job ends; update the order when they change). Longest first,
# but the PyTorch job sixth: last, it ran nearly alone at the end. On JAX, the pipeline's
# engine is checked through its full chain only (the engine is the same Python on every
# backend; its other tests run on TensorFlow).
jobs=(
  "tf_export_text_datasets tensorflow tests/export tests/text tests/datasets"  # 560
  "jax_distill jax tests/distill tests/pipeline/test_pipeline.py::test_full_chain_writes_models_report_and_agrees_with_keras ${left_to_tf[*]@Q}"  # 530
  "jax_others jax tests/prune tests/quantize tests/transfer ${left_to_tf[*]@Q}"  # 450
  "tf_pipeline_a tensorflow ${tf_pipeline_a[*]}"  # 412
  "tf_distill tensorflow tests/distill ${tf_distill_processes[*]/#/--ignore=}"  # 405
  "torch torch tests/distill tests/prune tests/quantize tests/cluster ${left_to_tf[*]@Q}"  # 250
  "tf_others tensorflow tests ${tf_split[*]/#/--ignore=}"  # 400
  "tf_pipeline tensorflow ${pipeline_rest[*]}"  # 360
  "tf_cli tensorflow tests/pipeline/test_cli.py"  # 339
  "tf_model_kinds tensorflow tests/test_model_kinds.py"  # 323
  "tf_prune_quantize tensorflow tests/prune tests/quantize"  # 322
  "tf_pipeline_chain tensorflow tests/pipeline/test_pipeline.py"  # 194
  "tf_distill_processes tensorflow ${tf_distill_processes[*]}"  # 160
  "tf_examples tensorflow tests/examples"  # 107
)
# Four jobs share two cores: each keeps to one thread (TensorFlow, oneDNN, XLA, PyTorch),
# which spends less time switching between threads than four thread pools on two cores.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1
export XLA_FLAGS="${XLA_FLAGS:---xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1}"
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
# Each job's JAX keeps what it compiles in a folder of its own for the run, so a program
# another of its tests compiled (the same model, optimizer and batch shapes) is read back,
# not compiled again: compiling is most of a JAX test's time here (measured in e98e39c's
# message, and side by side in CI in stop 66's note). One folder per job: JAX writes its entries
# without a lock, and a reader of a half-written one compiles again with a warning (a job's
# own JAX subprocesses, and every job with a caller's JAX_COMPILATION_CACHE_DIR, share one).
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="${JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS:-0}"
caller_args=("$@")
extra_args=$#

run_job() {  # run_job NAME BACKEND PYTEST_ARGS...; writes the exit status to $logs/NAME.status
  local name=$1 backend=$2 status=0 began=$SECONDS
  shift 2
  JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$logs/jax-cache-$name}" \
    KERAS_BACKEND=$backend python -m pytest -q -p no:cacheprovider --durations=15 "$@" \
    >"$logs/$name" 2>&1 || status=$?
  # With a marker or -k from the caller, a job may select nothing (pytest's exit 5): not a failure.
  [ "$status" -eq 5 ] && [ "$extra_args" -gt 0 ] && status=0
  echo "$status" >"$logs/$name.status"
  echo "== $name ($backend) ended after $((SECONDS - began)) s, exit $status; $((SECONDS - start)) s in all"
}

for job in "${jobs[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$parallel" ]; do wait -n || true; done
  eval "set -- $job"
  echo "== $1 ($2) started at $((SECONDS - start)) s: pytest ${*:3}"
  run_job "$@" "${caller_args[@]}" &
done
wait

failed=()
for job in "${jobs[@]}"; do
  name=${job%% *}
  echo "== log of $name"
  cat "$logs/$name"
  [ "$(cat "$logs/$name.status" 2>/dev/null || echo missing)" = 0 ] || failed+=("$name")
done
echo "== test jobs took $((SECONDS - start)) s"
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]}"
  exit 1
fi

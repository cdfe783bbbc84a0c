#!/usr/bin/env bash
# One call on the lent GPU machine: the next resumable chunk of the paper profile, results packed into $OUT.
#
#   bash scripts/device_paper_chunk.sh MINUTES [RESULTS]   # e.g. 4.5: no new job after 4.5 min (a job takes <= 3.5)
#
# The results folder travels with the working tree (unpack the previous chunk's archive before the next call).
# Triton and Inductor caches stay on the machine between warm calls (.cache/, ignored).
set -uo pipefail
minutes=${1:-4.5} results=${2:-results/paper}
mkdir -p "$results"
[ -f "$results/nvidia-smi.txt" ] || nvidia-smi > "$results/nvidia-smi.txt"
export TORCHINDUCTOR_CACHE_DIR=$PWD/.cache/inductor TRITON_CACHE_DIR=$PWD/.cache/triton PYTHONUNBUFFERED=1
python -m attnlib.pipeline run --profile paper --results "$results" --max-minutes "$minutes"
code=$?
tar czf "${OUT:-/tmp}/results.tgz" "$results"
ls "$results/raw" | wc -l
exit $code

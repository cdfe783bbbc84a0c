#!/usr/bin/env bash
# One call on the GPU machine: the next resumable chunk of a profile (default paper), results packed into $OUT.
#
#   bash scripts/device_chunk.sh MINUTES [RESULTS] [PROFILE]   # e.g. 4.5: no new job after 4.5 min
#   bash scripts/device_chunk.sh 4.5 results/longcontext longcontext
#
# VARIANTS=a,b limits the chunk to those variants (their jobs in plan order); GPUS=N runs a distributed profile's
# jobs on N cards (torchrun, one rank each).
# A job still running STOP_MINUTES (default 8) after the chunk began is stopped; the next chunk resumes it (a
# components, inference or distributed job at its first missing window, a trials or quality job at its first
# mode or seed without results, a long-context job at its first paired cell without all its windows; a cell, mode
# or seed that was cut short is measured afresh). run.json records every chunk's time, stopped jobs included.
# The results folder travels with the working tree (unpack the previous chunk's archive before the next call).
# Triton and Inductor caches stay on the machine between warm calls (.cache/, ignored).
set -uo pipefail
minutes=${1:-4.5} results=${2:-results/paper} profile=${3:-paper}
# the tree that travels here may carry a stale .git: every result must name the commit that really ran
: "${ATTNLIB_COMMIT:?set ATTNLIB_COMMIT to the full commit of the tree you send (git rev-parse HEAD)}"
mkdir -p "$results"
[ -f "$results/nvidia-smi.txt" ] || nvidia-smi > "$results/nvidia-smi.txt"
export TORCHINDUCTOR_CACHE_DIR=$PWD/.cache/inductor TRITON_CACHE_DIR=$PWD/.cache/triton PYTHONUNBUFFERED=1
python -m attnlib.pipeline run --profile "$profile" --results "$results" --max-minutes "$minutes" --stop-minutes "${STOP_MINUTES:-8}" \
  ${VARIANTS:+--variants "$VARIANTS"} ${GPUS:+--gpus "$GPUS"}
code=$?
tar czf "${OUT:-/tmp}/results.tgz" "$results"
ls "$results/raw" | wc -l
exit $code

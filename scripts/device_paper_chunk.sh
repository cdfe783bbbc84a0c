#!/usr/bin/env bash
# One call on the lent GPU machine: the next resumable chunk of the paper profile, results packed into $OUT.
#
#   bash scripts/device_paper_chunk.sh GPUS MINUTES     # e.g. 2 7.5: two GPUs, no new job after 7.5 min
#
# results/paper/ travels with the working tree; while the machine stays warm, a copy under /tmp also carries
# results to the next call in case the tree's copy is older. Tokenized data (.cache/) and the Triton/Inductor
# caches stay on the machine between warm calls.
set -uo pipefail
gpus=${1:-1} minutes=${2:-7.5}
backup=/tmp/attnlib-results-paper
mkdir -p results/paper
[ -d "$backup" ] && cp -r "$backup"/. results/paper/
[ -f results/paper/nvidia-smi.txt ] || nvidia-smi > results/paper/nvidia-smi.txt
./run_all.sh --profile paper --gpus "$gpus" --max-minutes "$minutes"
code=$?
mkdir -p "$backup" && cp -r results/paper/. "$backup"/
tar czf "${OUT:-/tmp}/results-paper.tgz" results/paper
ls results/paper/raw | wc -l
exit $code

#!/usr/bin/env bash
# One call on the GPU machine: the short probes that decide what the next measured runs use, results in $OUT.
#
#   bash scripts/device_probes.sh compile    # about 7 minutes on an H100
#   bash scripts/device_probes.sh decode     # about 5 minutes
#
# - compile_scope "nested" against the whole-model compile and the plain torch.compile loop (throughput, first
#   step: does it keep >= 0.97x of the plain loop?), 3 rounds of 5 s windows;
# - every variant's first step and throughput compiled with "nested";
# - the decoder: bf16 decode against the full forward (eager and cudagraph), ms per step per mode, the memory floor.
set -uo pipefail
out=${OUT:-/tmp/probes}
mkdir -p "$out"
export TORCHINDUCTOR_CACHE_DIR=$PWD/.cache/inductor TRITON_CACHE_DIR=$PWD/.cache/triton PYTHONUNBUFFERED=1
nvidia-smi > "$out/nvidia-smi.txt"
case "${1:-}" in
  compile)
    python scripts/gpu_compile_parity.py --out "$out/parity" --trials 3 \
      --candidates plain/compile,attnlib/compile,attnlib/compile-nested,attnlib/graph-nested
    python scripts/gpu_mode_probe.py --out "$out/nested" --mode compile --scope nested ;;
  decode)
    python scripts/gpu_decode_check.py --out "$out/decode" ;;
  *) echo "usage: bash scripts/device_probes.sh compile|decode" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# One call on the GPU machine: as much of the remaining measurement plan as fits, in its order, results in $OUT.
#
#   STOP_MINUTES=8.4 bash scripts/device_queue.sh 7.5   # no new job after 7.5 min, none running after 8.4
#   ONLY='hf_functions' bash scripts/device_queue.sh 7.5   # only the steps that match (grep -E)
#
# The plan, in the order the issues need it: each step is a resumable profile (skipped once complete, resumed at its
# first job without results) or a one-off GPU check (skipped once its output exists with no failed row). A step that
# finishes early hands the rest of the call to the next; a profile cut short by the clock ends the call, and the next
# call resumes it. Every results folder that the call touched is packed into $OUT/results.tgz (unpack it in the checkout before
# the next call). ATTNLIB_COMMIT names the commit that really ran (the travelling tree may carry a stale .git).
# ONLY keeps the steps that match it. A step may name the card it is measured on: the timing studies and the
# reviewer's timed path on H100s, as their issues ask; quality, recall and the checks on any card (what a model
# learns does not depend on the card; their energy column names it). On another card the call skips the step, as it
# skips a profile folder begun on another kind of card (the pipeline would refuse to mix them), and goes on.
set -uo pipefail
minutes=${1:-7.5} stop=${STOP_MINUTES:-8.4}
: "${ATTNLIB_COMMIT:?set ATTNLIB_COMMIT to the full commit of the tree you send (git rev-parse HEAD)}"
[ -f .tok/tokenizer.model ] && export ATTNLIB_LLAMA3_TOKENIZER=$PWD/.tok/tokenizer.model
export TORCHINDUCTOR_CACHE_DIR=$PWD/.cache/inductor TRITON_CACHE_DIR=$PWD/.cache/triton PYTHONUNBUFFERED=1
# fla's Triton kernels autotune on their first use of a shape (two minutes of the 1B linear job's first step, on a
# machine that starts bare at every session), and fla has Triton keep each choice in its cache
# (<key>/<kernel>.autotune.json; the key hashes the kernel's source, Triton and the GPU's architecture, so a choice
# made for other code or another card is never found). The choices travel between calls in .autotune/ (ignored;
# carry it): copied into the cache before the first step, and those the call made come back in results.tgz. Only the
# warm-up is shortened: the kernels run with the configuration autotuning picked on a card of the same kind.
autotune=.autotune
[ -d "$autotune" ] && mkdir -p "$TRITON_CACHE_DIR" && cp -rn "$autotune/." "$TRITON_CACHE_DIR/"

# step: "profile NAME FOLDER [OPTIONS...]" (OPTIONS go to the pipeline: "--variants sdpa" runs that job alone, and the
# profile's own step later runs the rest) or "check OUTPUT FOLDER COMMAND..." (COMMAND writes OUTPUT into FOLDER);
# "profile@H100" or "check@H100" runs the step only on a card whose name has "H100" in it. The 1B model's long-context
# sdpa job (the A/A control of that table) runs before the 1B training table: it is what shows the model training at
# 32K and 64K tokens on one card, peak memory alone recorded. sdpa's inference and components jobs (the anchor, the
# A/A controls) run before the other variants' long-context jobs: their pace is what the cuts of those two grids to
# the 120-minute budget of #27 are made from.
plan=(
  "profile@H100 longcontext results/longcontext"
  "check results/gpu/llama_check.json results/gpu python scripts/gpu_check_llama.py --out results/gpu"
  "check results/gpu/llama_parity.json results/gpu python scripts/gpu_compile_parity.py --arch llama --out results/gpu --trials 3"
  "check results/gpu/hf_functions.json results/gpu python scripts/gpu_check_hf_functions.py --out results/gpu"
  "profile@H100 llama-longcontext results/llama-longcontext --variants sdpa"
  "profile@H100 llama results/llama"
  "profile@H100 llama-inference results/llama-inference --variants sdpa"
  "profile@H100 llama-components results/llama-components --variants sdpa"
  "profile@H100 llama-longcontext results/llama-longcontext"
  "profile@H100 llama-inference results/llama-inference"
  "profile@H100 llama-components results/llama-components"
  "profile recall results/quality"
  "profile quality results/quality"
  "check@H100 results/gpu/reviewer_path.json results/gpu python scripts/gpu_time_reviewer_path.py --out results/gpu"
)
start=$SECONDS touched=()
card=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)

# Before any GPU work: what every step imports, and both families' tokenizers offline (a missing wheel would
# otherwise surface as every job's notebook failing, minutes into the call). SKIP_PREFLIGHT=1: the queue's own tests.
preflight='import papermill, codecarbon, fla; from attnlib.data import load_tokenizer as t; t("gpt2"); t("llama3")'
[ -n "${SKIP_PREFLIGHT:-}" ] || python3 -c "$preflight" \
  || { echo "preflight failed: see the error above (scripts/device_tree.sh slim prepares .whl and .tok)"; exit 1; }

# A warm machine keeps ignored folders between calls, but the tree each call sends replaces results/: a call sent
# before the previous call's results.tgz was unpacked would measure those jobs again. The previous call's folders
# wait in an ignored stash; a profile folder whose raw results the stash has and the tree lacks is taken from it.
stash=.queue-stash
for step in "${plan[@]}"; do
  read -r kind first folder rest <<< "$step"
  [ "${kind%@*}" = profile ] && [ -d "$stash/$folder/raw" ] || continue
  if comm -23 <(ls "$stash/$folder/raw" | sort) <(ls "$folder/raw" 2>/dev/null | sort) | grep -q .; then
    echo "== $folder: the previous call's results on this machine were not in the tree sent; restored from $stash"
    mkdir -p "$folder" && cp -a "$stash/$folder/." "$folder/"
  fi
done
# Every folder touched so far into $OUT/results.tgz (whole, then renamed: never half an archive) and into the stash,
# after each step and when the call is stopped (a call past its limit is sent SIGTERM): a call that overruns still
# returns what it measured. Give the call a limit of at least STOP_MINUTES plus a minute (wheels, preflight, packing),
# and no more STOP_MINUTES than the device time left allows (the device shortens a call's limit to it).
pack() {
  [ ${#touched[@]} -gt 0 ] || return 0
  local folders archive=${OUT:-/tmp}/results.tgz
  folders=$(printf '%s\n' "${touched[@]}" | sort -u)
  local tuned=$PWD/$autotune  # the autotuning choices travel beside the results (see .autotune above)
  mkdir -p "$tuned" "$TRITON_CACHE_DIR"
  (cd "$TRITON_CACHE_DIR" && find . -name '*.autotune.json' -exec cp --parents -t "$tuned" {} +)
  tar czf "$archive.part" $folders "$autotune" && mv "$archive.part" "$archive"
  for folder in $folders; do mkdir -p "$stash/$folder" && cp -a "$folder/." "$stash/$folder/"; done
}
# Each step runs in the background and the queue waits for it: a TERM sent to this shell alone (as `timeout` sends
# it) interrupts the wait at once, where a step run in the foreground would hold the trap until it ended, and a
# call's last seconds would pass with nothing packed. The trap stops the step, then packs.
step_pid=
run_step() { "$@" & step_pid=$!; wait "$step_pid"; }
trap 'echo "== the call was stopped: packing what it measured"; [ -z "$step_pid" ] || kill "$step_pid" 2>/dev/null
      pack; exit 143' TERM INT
left_s() { awk -v m="$1" -v e=$((SECONDS - start)) 'BEGIN { printf "%.2f", m - e / 60 }'; }  # minutes
at_least() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }

for step in "${plan[@]}"; do
  [ -n "${ONLY:-}" ] && ! grep -Eq -- "$ONLY" <<< "$step" && continue
  read -r kind first folder rest <<< "$step"
  needs=${kind#*@} kind=${kind%@*}
  if [ "$needs" != "$kind" ] && [[ "$card" != *"$needs"* ]]; then
    echo "== $kind $first: measured on ${needs}s, and this card is ${card:-unknown}; skipped"
    continue
  fi
  begun_on=$(sed -n 's/^ *"device": "\(.*\)",*$/\1/p' "$folder/run.json" 2>/dev/null | head -1)
  if [ "$kind" = profile ] && [ -n "$begun_on" ] && [ "$begun_on" != "$card" ]; then
    echo "== profile $first: $folder was begun on $begun_on, and this card is ${card:-unknown}; skipped"
    continue
  fi
  at_least "$(left_s "$minutes")" 0.3 || break
  mkdir -p "$folder"
  [ -f "$folder/nvidia-smi.txt" ] || nvidia-smi > "$folder/nvidia-smi.txt"
  if [ "$kind" = check ]; then
    python3 -c 'import json, sys; sys.exit(not all(r.get("ok", True) for r in json.load(open(sys.argv[1])).get("rows", [])))' \
      "$first" 2>/dev/null && continue  # done: written, and no row failed (a check reruns its failed rows)
    echo "== $rest (until ${stop} min)"
    touched+=("$folder")
    run_step timeout "$(awk -v s="$(left_s "$stop")" 'BEGIN { printf "%d", s * 60 }')" $rest \
      || { echo "stopped or failed: $rest"; break; }
    pack
  else
    echo "== profile $first into $folder"
    touched+=("$folder")
    run_step python -m attnlib.pipeline run --profile "$first" --results "$folder" \
      --max-minutes "$(left_s "$minutes")" --stop-minutes "$(left_s "$stop")" $rest
    [ $? -eq 0 ] || break  # jobs left: the next call resumes here
    pack
  fi
done
pack
echo "touched: ${touched[*]:-nothing}; $(( (SECONDS - start) / 60 )) min"

#!/usr/bin/env bash
# The one command: environment, measurements (papermill, one notebook per job), tables, figures, paper.
#
#   ./run_all.sh                       # CUDA -> measure the paper profile; no GPU -> rebuild the paper from the
#                                      # committed results/paper/ (the reviewer path), or run smoke if there are none
#   ./run_all.sh --profile smoke       # choose the profile
#   ./run_all.sh --variants sdpa,flash # a subset of attnlib.VARIANTS
#   ./run_all.sh --force               # redo results that already exist (otherwise they are kept: resumable)
#   ./run_all.sh --max-minutes 8       # start no new job after 8 minutes (run again to resume)
#   ./run_all.sh --gpus 2              # share the plan between GPUs 0 and 1, one job per GPU at a time
#   ./run_all.sh --report-only         # rebuild tables, figures and the PDF from results/<profile>/ (no GPU needed)
set -euo pipefail
cd "$(dirname "$0")"

profile="" variants="all" force="" max_minutes="" report_only="" gpus=1
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --variants) variants="$2"; shift 2 ;;
    --force) force="--force"; shift ;;
    --max-minutes) max_minutes="--max-minutes $2"; shift 2 ;;
    --report-only) report_only=1; shift ;;
    --gpus) gpus="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "run_all.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

fail() { echo "run_all.sh: $*" >&2; exit 1; }
[[ "$gpus" =~ ^[1-9][0-9]*$ ]] || fail "error: --gpus '$gpus' is not a positive number"

# 1. Environment: the active conda env (from environment.yml) or virtualenv if it has attnlib, else ./.venv.
if ! python3 -c "import attnlib, papermill" 2>/dev/null; then
  if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv and installing attnlib (pip install -e .)"
    python3 -m venv .venv || fail "could not create a virtualenv (is python3-venv installed?)"
  fi
  # shellcheck disable=SC1091
  . .venv/bin/activate
  if ! python -c "import attnlib, papermill" 2>/dev/null; then
    # ATTNLIB_TORCH: a torch requirement to install first, e.g. a CPU build on a machine without a GPU
    # (README, "CPU-only machines"); otherwise pip picks PyPI's default build.
    [ -n "${ATTNLIB_TORCH:-}" ] && { python -m pip install -q "$ATTNLIB_TORCH" || fail "could not install $ATTNLIB_TORCH"; }
    python -m pip install -q -e ".[dev]" || fail "pip install -e . failed; see the messages above"
  fi
fi
python -c "import attnlib" || fail "attnlib does not import in $(command -v python)"

# 2. Profile from the hardware unless given.
if [ -z "$profile" ]; then
  if python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    profile=paper
  elif [ -d results/paper/raw ]; then
    profile=paper report_only=1
    echo "== no GPU: rebuilding the paper from the committed results/paper/ (--profile smoke measures on this CPU)"
  else
    profile=smoke
  fi
  echo "== profile: $profile (from the hardware; --profile overrides)"
fi
results="results/$profile"

# 3. Measurements (skipped with --report-only). Exit code 3: stopped by --max-minutes, resumable.
# With --gpus N, one pipeline per GPU (CUDA_VISIBLE_DEVICES=i, --shard i/N), each measuring only its own card
# and pinned to its own 1/N of the CPU cores: a compiled step of a small model is bound by the host's kernel
# launches, and jobs sharing cores slowed each other (the first paper run, see results/paper/README.md).
if [ -z "$report_only" ]; then
  pids=() cores=$(nproc)
  for ((i = 0; i < gpus; i++)); do
    # shellcheck disable=SC2086
    if [ "$gpus" = 1 ]; then
      python -m attnlib.pipeline run --profile "$profile" --variants "$variants" $force $max_minutes &
    else
      per=$((cores / gpus)) pin=()
      command -v taskset >/dev/null && [ "$per" -ge 1 ] && pin=(taskset -c "$((i * per))-$((i * per + per - 1))")
      CUDA_VISIBLE_DEVICES=$i "${pin[@]}" python -m attnlib.pipeline run --profile "$profile" \
        --variants "$variants" $force $max_minutes --shard "$i/$gpus" > >(sed -u "s/^/[gpu $i] /") 2>&1 &
    fi
    pids+=($!)
  done
  codes=()
  for pid in "${pids[@]}"; do set +e; wait "$pid"; codes+=($?); set -e; done
  for code in "${codes[@]}"; do
    [ "$code" = 0 ] || [ "$code" = 3 ] || fail "the measurement pipeline failed (exit codes: ${codes[*]})"
  done
  if [[ " ${codes[*]} " == *" 3 "* ]]; then echo "== partial run: run the same command again to resume"; exit 0; fi
fi
[ -d "$results/raw" ] || fail "no results in $results/raw: run without --report-only first"

# 4. Tables, figures, macros (the aggregation notebook).
python -m attnlib.pipeline report --profile "$profile" || fail "aggregation failed"

# 5. The paper.
pdf="paper/paper-$profile.pdf"
if command -v latexmk >/dev/null 2>&1; then
  # the PDF's dates are the results' commit date: a rebuild from the same results gives the same PDF
  # (-g: latexmk cannot see that date change, so it always builds)
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct -- "$results" 2>/dev/null || true)
  export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(date +%s)}
  (cd paper && latexmk -g -pdf -interaction=nonstopmode -halt-on-error -jobname="paper-$profile" \
      -usepretex="\\def\\attnprofile{$profile}" paper.tex >"latexmk-$profile.log" 2>&1) \
    || fail "LaTeX failed: see paper/latexmk-$profile.log"
  [ "$profile" = paper ] && cp "$pdf" paper/paper.pdf
else
  echo "== LaTeX (latexmk) is not installed: tables and figures are written, the PDF is not"
  pdf=""
fi

echo
echo "== done ($profile)"
echo "   results:  $results/ (raw/*.json, notebooks/*.ipynb, summary.csv)"
echo "   tables:   paper/generated/$profile/"
echo "   figures:  figures/$profile/"
[ -n "$pdf" ] && echo "   paper:    $pdf"
exit 0

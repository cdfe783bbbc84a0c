#!/usr/bin/env bash
# The one command: environment, measurements (papermill, one notebook per job), tables, figures, paper.
#
#   ./run_all.sh                       # CUDA -> measure the paper profile; no GPU -> rebuild the paper from the
#                                      # committed results/paper/ (the reviewer path), or run smoke if there are none
#   ./run_all.sh --profile smoke       # choose the profile (paper, smoke; a GPU's: longcontext, the 512-64K grid,
#                                      # inference, prefill and decode; components, CLEAR; quality, language
#                                      # modelling at 25M tokens; recall, MQAR; llama and llama-longcontext, the
#                                      # 1B model, llama-inference its decoding; distributed, DDP and context
#                                      # parallelism through torchrun)
#   ./run_all.sh --profile distributed --gpus 4   # the cards a distributed job spreads over, one rank each
#   ./run_all.sh --variants sdpa,flash # a subset of attnlib.VARIANTS
#   ./run_all.sh --results DIR         # measure into DIR (default results/<profile>); with a GPU, also compare
#                                      # DIR's table with the committed results/paper/ (DIR/comparison.csv)
#   ./run_all.sh --force               # redo results that already exist (otherwise they are kept: resumable)
#   ./run_all.sh --max-minutes 8       # start no new job after 8 minutes (run again to resume)
#   ./run_all.sh --stop-minutes 10     # stop a job still running 10 minutes after the start (redone next run)
#   ./run_all.sh --report-only         # rebuild tables, figures and the PDF from the results folder (no GPU needed)
set -euo pipefail
cd "$(dirname "$0")"

profile="" variants="all" force="" chunk_flags="" report_only="" results="" gpus=""
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --variants) variants="$2"; shift 2 ;;
    --results) results="$2"; shift 2 ;;
    --force) force="--force"; shift ;;
    --max-minutes) chunk_flags="$chunk_flags --max-minutes $2"; shift 2 ;;
    --stop-minutes) chunk_flags="$chunk_flags --stop-minutes $2"; shift 2 ;;
    --gpus) gpus="--gpus $2"; shift 2 ;;
    --report-only) report_only=1; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "run_all.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

fail() { echo "run_all.sh: $*" >&2; exit 1; }

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
gpu=$(python -c "import attnlib, torch; print(int(torch.cuda.is_available()))") \
  || fail "attnlib does not import in $(command -v python)"

# 2. Profile from the hardware unless given.
if [ -z "$profile" ]; then
  if [ "$gpu" = 1 ]; then
    profile=paper
  elif [ -d results/paper/raw ] && [ -z "$results" ]; then
    profile=paper report_only=1
    echo "== no GPU: rebuilding the paper from the committed results/paper/ (--profile smoke measures on this CPU)"
  else
    profile=smoke
  fi
  echo "== profile: $profile (from the hardware; --profile overrides)"
fi
results=${results:-results/$profile}
label=$(basename "$results")  # names the generated tables, figures and PDF of this results folder

# 3. Measurements (skipped with --report-only). Exit code 3: stopped by --max-minutes or --stop-minutes, resumable.
if [ -z "$report_only" ]; then
  set +e
  # shellcheck disable=SC2086
  python -m attnlib.pipeline run --profile "$profile" --variants "$variants" --results "$results" $force $chunk_flags $gpus
  code=$?
  set -e
  [ "$code" = 0 ] || [ "$code" = 3 ] || fail "the measurement pipeline failed (exit code $code)"
  if [ "$code" = 3 ]; then echo "== partial run: run the same command again to resume"; exit 0; fi
fi
[ -d "$results/raw" ] || fail "no results in $results/raw: run without --report-only first"

# 4. Tables, figures, macros (the aggregation notebook); a reviewer's folder is compared with ours.
python -m attnlib.pipeline report --profile "$profile" --results "$results" || fail "aggregation failed"
section=""  # a family with a section of its own: long context (crossover.csv), inference (decode.csv), components
# (coverage.csv), quality (quality.csv, or recall.csv alone), distributed (a summary.csv with scaling_efficiency)
[ -f "$results/crossover.csv" ] && section=longcontext
[ -f "$results/decode.csv" ] && section=inference
[ -f "$results/coverage.csv" ] && section=components
{ [ -f "$results/quality.csv" ] || { [ -f "$results/recall.csv" ] && [ ! -f "$results/summary.csv" ]; }; } && section=quality
[ -f "$results/summary.csv" ] && head -1 "$results/summary.csv" | grep -q scaling_efficiency && section=distributed
if [ -z "$section" ] && [ -f "$results/summary.csv" ]; then  # another family's training table: its own section
  arch=$(python -c "import sys, pandas as p; s = p.read_csv(sys.argv[1]); print(s.arch.iloc[0] if 'arch' in s and len(s) else 'gpt2')" "$results/summary.csv")
  [ "$arch" != gpt2 ] && section=$arch
fi
if [ "$label" != paper ] && [ -f results/paper/summary.csv ] && [ "$gpu" = 1 ] && [ -z "$section" ]; then
  echo "== $results against the committed results/paper/ (written to $results/comparison.csv)"
  python -m attnlib.pipeline compare --results "$results" --reference results/paper || fail "comparison failed"
fi

# 5. The paper. A long-context, inference or components folder is not a paper of its own: results/<family>/ is a
#    section of the paper built from results/paper/ (paper/<family>.tex), so that paper is rebuilt.
if [ -n "$section" ]; then
  if [ "$label" = "$section" ] && [ -f paper/generated/paper/macros.tex ]; then
    label=paper
  else
    echo "== $results is a $section folder: tables and figures written; the paper's section reads results/$section/"
    label=""
  fi
fi
[ "$label" = paper ] && { python -m attnlib.pipeline decisions || fail "the decision table failed"; }  # crosses folders
pdf="paper/paper-$label.pdf"
if [ -z "$label" ]; then
  pdf=""
elif command -v latexmk >/dev/null 2>&1; then
  # the PDF's dates are the newest creation time of the results it reads (the paper: its folder and its sections'):
  # a rebuild from the same results gives the same PDF, whichever folder asked for it and committed or not
  # (-g: latexmk cannot see that date change, so it always builds)
  sources="$results"
  if [ "$label" = paper ]; then  # the paper reads every folder below; the decision table crosses them
    sources="results/paper results/longcontext results/inference results/components results/distributed"
    sources="$sources results/quality results/llama results/llama-longcontext results/llama-inference results/llama-components"
  fi
  # shellcheck disable=SC2086
  SOURCE_DATE_EPOCH=$(python -c "import sys; from attnlib.results import newest_result_epoch; print(max(newest_result_epoch(d) for d in sys.argv[1:]))" $sources)
  export SOURCE_DATE_EPOCH
  (cd paper && latexmk -g -pdf -interaction=nonstopmode -halt-on-error -jobname="paper-$label" \
      -usepretex="\\def\\attnprofile{$label}" paper.tex >"latexmk-$label.log" 2>&1) \
    || fail "LaTeX failed: see paper/latexmk-$label.log"
  if [ "$label" = paper ]; then cp "$pdf" paper/paper.pdf; pdf=paper/paper.pdf; fi
else
  echo "== LaTeX (latexmk) is not installed: tables and figures are written, the PDF is not"
  pdf=""
fi

echo
echo "== done ($profile -> $results)"
echo "   results:  $results/ (raw/*.json, notebooks/*.ipynb, summary.csv, run.json)"
echo "   tables:   paper/generated/$(basename "$results")/"
echo "   figures:  figures/$(basename "$results")/"
[ -n "$pdf" ] && echo "   paper:    $pdf"
exit 0

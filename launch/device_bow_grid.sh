#!/usr/bin/env bash
# The bag-of-words grid of docs/results/bow.md (Krishnan et al. 2018) on one borrowed GPU, as one time-boxed
# command: the rows that refine in training (finopt, finopt_none, none_finopt; about an hour a cell on a 2-core
# CPU) and the 2-layer TF-IDF 'none' row (the spectra's reference), 3 seeds each. Every (row, seed) cell is its
# own process (`dtr.bench bow table --only_seed`), PARALLEL at a time sharing the GPU, started in the order of
# CELLS below (most wanted first: the 2-layer TF-IDF rows, then the linear ones, then count inputs); a cell not
# finished by the deadline is killed and left out of the table.
#
#   launch/device_bow_grid.sh OUT_DIR [SECONDS] [extra `dtr.bench bow table` flags, e.g. --tiny]
#
# SECONDS: the whole script's wall-clock budget (default 540); cells are killed 80 s before it ends, for the
# table. Environment: DTR_BOW_SPEED_S (seconds for `python -m dtr.bench bow speed` alone on the GPU before the
# grid; default 0: not run), DTR_BOW_PARALLEL (cells at a time; default: from the speed bench's finopt K = 100
# step time, as many as can each finish by the deadline when they share the GPU evenly, 2 to 10; else 6),
# DTR_BOW_CELLS (the cells to run instead of the list below), DTR_BOW_CACHE (the cells' folder, default
# /tmp/bow_cells).
# Before (on the machine that sends the working tree): the data and, where the GPU machine lacks them, dtr's
# dependencies as wheels, both in git-ignored folders that the call carries (`carry: [".devdata", ".whl"]`):
#   mkdir -p .devdata/data/bow && cp -r ../shared/data/bow/20news_clean .devdata/data/bow/
#   (wheels for the machine's Python, as the device tool's README shows; on the H200 image of 2026-12 these
#   were missing: tensorflow-datasets, array_record, dm-tree, immutabledict, promise (an sdist: `pip wheel` it),
#   simple-parsing, docstring_parser, tensorflow-metadata, googleapis-common-protos, termcolor, toml,
#   importlib_resources, ml-collections)
# After: OUT_DIR holds bow_grid.md (the table and its spectra lines), bow_spectra.png, cells.tgz (every finished
# cell's bow_eval_*.json; untar it into a local --cache_dir and run the table with --read_only --spectra_out=-
# to merge these cells with others), cells.log (each cell's last lines), speed.log and table.log.
set -uo pipefail
if [ $# -lt 1 ]; then sed -n '2,26p' "$0"; exit 2; fi
OUT=$1; shift
T0=$(date +%s)
BUDGET=540
if [[ ${1:-} =~ ^[0-9]+$ ]]; then BUDGET=$1; shift; fi
SPEED_S=${DTR_BOW_SPEED_S:-0}
CACHE=${DTR_BOW_CACHE:-/tmp/bow_cells}
mkdir -p "$OUT" "$OUT/cells"
if ! python3 -c 'import tensorflow_datasets, array_record, ml_collections' 2>/dev/null \
    && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} || exit 1
fi
# dtr runs from this checkout; its configs/ is installed as dtr.configs, which a link stands in for here.
[ -e dtr/configs ] || ln -s ../configs dtr/configs
[ -d .devdata/data ] && export DTR_DATA_DIR=$PWD/.devdata/data
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1  # several processes share the GPU
python3 -c 'import jax, dtr.configs; print("JAX", jax.__version__, jax.devices())' 2>&1 | tee "$OUT/speed.log"
COMMON=(--dataset=20news_clean --seeds=3 --no-nvdm --num_epochs=120 --set=patience=1000 --cache_dir="$CACHE" "$@")
# The data prepared once (tfds array_record), before parallel cells would each prepare it.
python3 -m dtr.bench bow table "${COMMON[@]}" --depths=2 --inputs=tfidf --regimes=none --read_only \
  >> "$OUT/table.log" 2>&1 || { tail -n 30 "$OUT/table.log"; exit 1; }
if [ "$SPEED_S" -gt 0 ]; then
  timeout "$SPEED_S" python3 -m dtr.bench bow speed --dataset=20news_clean >> "$OUT/speed.log" 2>&1
  echo "speed: rc $?" >> "$OUT/speed.log"
fi

DEADLINE=$(( T0 + BUDGET - 80 ))
PARALLEL=${DTR_BOW_PARALLEL:-}
STEP_MS=$(grep -o 'finopt K=100 *| *[0-9,]* docs/s | *[0-9.]* ms/step' "$OUT/speed.log" \
  | grep -o '[0-9.]* ms/step' | cut -d' ' -f1)
if [ -z "$PARALLEL" ] && [ -n "$STEP_MS" ]; then  # a finopt cell: about 120 epochs x 21 steps, plus ~60 s to compile
  PARALLEL=$(python3 -c "print(max(2, min(10, int(($DEADLINE - $(date +%s) - 60) / (2520 * $STEP_MS / 1000)))))")
fi
PARALLEL=${PARALLEL:-6}
echo "grid: $PARALLEL cells at a time (finopt K=100 step ${STEP_MS:-?} ms alone), $(( DEADLINE - $(date +%s) )) s" \
  | tee -a "$OUT/speed.log"
CELLS=()
for seed in 0 1 2; do CELLS+=("2 tfidf finopt $seed"); [ $seed = 0 ] && CELLS+=("2 tfidf none 0"); done
for seed in 0 1 2; do CELLS+=("2 tfidf finopt_none $seed"); done
for regime in finopt finopt_none; do for seed in 0 1 2; do CELLS+=("0 tfidf $regime $seed"); done; done
for depth in 2 0; do for regime in finopt finopt_none; do for seed in 0 1 2; do
  CELLS+=("$depth counts $regime $seed"); done; done; done
for depth in 2 0; do for input in tfidf counts; do for seed in 0 1 2; do
  CELLS+=("$depth $input none_finopt $seed"); done; done; done
CELLS+=("2 tfidf none 1" "2 tfidf none 2")
# DTR_BOW_CELLS replaces the list, e.g. '2 tfidf none 1;0 counts finopt 2' (depth input regime seed; ...)
if [ -n "${DTR_BOW_CELLS:-}" ]; then IFS=';' read -r -a CELLS <<< "$DTR_BOW_CELLS"; fi

run_cell() {  # depth input regime seed: one cell, killed at the deadline
  local left=$(( DEADLINE - $(date +%s) )) name="d$1-$2-$3-seed$4"
  if [ "$left" -lt 30 ]; then echo "$name: not started (deadline)" > "$OUT/cells/$name.log"; return; fi
  timeout "$left" python3 -m dtr.bench bow table "${COMMON[@]}" --depths="$1" --inputs="$2" --regimes="$3" \
    --only_seed="$4" --spectra_out=- > "$OUT/cells/$name.log" 2>&1
  echo "$name: rc $? at $(( $(date +%s) - T0 )) s" >> "$OUT/cells/$name.log"
}
export -f run_cell; export DEADLINE T0 OUT
export COMMON_DECL="$(declare -p COMMON)"  # the array, quoting kept, for the cells' shells
printf '%s\n' "${CELLS[@]}" | xargs -P "$PARALLEL" -L 1 bash -c 'eval "$COMMON_DECL"; run_cell "$@"' _
# The table of every cell that finished, and the spectra of the 2-layer TF-IDF rows (seed 0 of each).
timeout $(( T0 + BUDGET - $(date +%s) - 10 )) python3 -m dtr.bench bow table "${COMMON[@]}" --depths=0,2 \
  --inputs=counts,tfidf --regimes=none,finopt,none_finopt,finopt_none --read_only --out="$OUT/bow_grid.md" \
  --spectra_out="$OUT/bow_spectra.png" >> "$OUT/table.log" 2>&1
(cd "$CACHE" && find . -name "bow_eval*.json" | tar czf "$OUT/cells.tgz" -T -)
# At most 8 files come back from the device machine: one log for all cells.
for f in "$OUT"/cells/*.log; do echo "== $f"; grep -v "^I[0-9]\|^W[0-9]" "$f" | tail -n 4; done > "$OUT/cells.log"
rm -rf "$OUT/cells"
ls -la "$OUT"

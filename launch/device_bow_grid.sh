#!/usr/bin/env bash
# The bag-of-words grid of docs/results/bow.md (Krishnan et al. 2018) on one borrowed GPU, as one time-boxed
# command: the rows that refine in training (finopt, none_finopt, finopt_none; about an hour each on a 2-core
# CPU) and the 2-layer TF-IDF 'none' row of the spectra, 3 seeds each, many rows at once on the one GPU.
#
#   launch/device_bow_grid.sh OUT_DIR [SECONDS] [extra `dtr.bench bow table` flags, e.g. --tiny]
#
# Before (on the machine that sends the working tree): the data and, where the GPU machine lacks them, dtr's
# dependencies as wheels, both in git-ignored folders that the call carries (`carry: [".devdata", ".whl"]`):
#   mkdir -p .devdata/data/bow && cp -r ../shared/data/bow/20news_clean .devdata/data/bow/
#   (wheels: tensorflow-datasets, array_record, ml-collections, tensorboardX and their missing requirements,
#   downloaded for the machine's Python as the device tool's README shows)
# After: OUT_DIR holds bow_grid.md (the table and its spectra lines), bow_spectra.png, cells.tgz (every finished
# cell's bow_eval_*.json; untar it into the local --cache_dir and run the table with --read_only --spectra_out=-
# to merge these cells with the CPU ones) and one log per row. Cells that did not finish by SECONDS are left
# out of the table (its seeds column says how many ran).
set -uo pipefail
if [ $# -lt 1 ]; then sed -n '2,17p' "$0"; exit 2; fi
OUT=$1; shift
BUDGET=420
if [[ ${1:-} =~ ^[0-9]+$ ]]; then BUDGET=$1; shift; fi
mkdir -p "$OUT"
if ! python3 -c 'import tensorflow_datasets, ml_collections, tensorboardX' 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} || exit 1
fi
if ! python3 -c 'import dtr.configs' 2>/dev/null; then  # dtr itself, with configs/ as dtr.configs
  python3 -m pip install -q --no-deps --no-build-isolation --no-cache-dir --target /tmp/dtr_site . || exit 1
  export PYTHONPATH=/tmp/dtr_site${PYTHONPATH:+:$PYTHONPATH}
fi
[ -d .devdata/data ] && export DTR_DATA_DIR=$PWD/.devdata/data
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.06}  # many processes share the GPU
python3 -c 'import jax; print("JAX", jax.__version__, jax.devices())' | tee "$OUT/jax.log"

CACHE=${DTR_BOW_CACHE:-/tmp/bow_cells}
COMMON=(--dataset=20news_clean --seeds=3 --no-nvdm --num_epochs=120 --set=patience=1000 --cache_dir="$CACHE" "$@")
pids=()
for depth in 0 2; do
  for input in counts tfidf; do
    regimes=finopt,none_finopt,finopt_none
    [ "$depth$input" = 2tfidf ] && regimes=none,$regimes
    for regime in ${regimes//,/ }; do
      name=d$depth-$input-$regime
      timeout "$BUDGET" python3 -m dtr.bench bow table "${COMMON[@]}" --depths=$depth --inputs=$input \
        --regimes=$regime > "$OUT/$name.log" 2>&1 &
      pids+=($!)
    done
  done
done
wait "${pids[@]}"
# The table of every cell that finished, and the spectra of the 2-layer TF-IDF rows.
python3 -m dtr.bench bow table "${COMMON[@]}" --depths=0,2 --inputs=counts,tfidf \
  --regimes=none,finopt,none_finopt,finopt_none --read_only --out="$OUT/bow_grid.md" \
  --spectra_out="$OUT/bow_spectra.png" > "$OUT/table.log" 2>&1
(cd "$CACHE" && find . -name "bow_eval*.json" | tar czf "$OUT/cells.tgz" -T -)
# At most 8 files come back from the device machine: one log for all rows.
tail -n 3 "$OUT"/d*.log > "$OUT/rows.log" && rm -f "$OUT"/d*.log
ls -la "$OUT"

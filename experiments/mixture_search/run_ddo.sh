#!/bin/bash
# DDO (2m+1 = 11 runs) at two budgets with the proxy model; then AutoScale's prediction for 6400 examples.
set -e
cd "$(dirname "$0")/../.."
export PYTHONPATH=$PWD/src OMP_NUM_THREADS=1
MIX="nice -n 10 /work/main/.venv/bin/python -m assay.mixsearch.cli"
OVR=$(cat experiments/mixture_search/proxy_overrides.txt)
for B in 800 1600; do
  $MIX ddo logs/mixsearch/ddo_$B --budget $B --factor 3 --base natural -- $OVR hydra/launcher=joblib hydra.launcher.n_jobs=1
  $MIX ddo logs/mixsearch/ddo_$B --fit --target 'val/loss/*'
done
$MIX optimal --ddo logs/mixsearch/ddo_800 logs/mixsearch/ddo_1600 --budget 6400 --out logs/mixsearch/proposed

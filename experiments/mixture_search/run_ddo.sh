#!/bin/bash
# DDO (2m+1 = 11 runs) at 400 and 800 examples with the proxy model; then AutoScale for 4000 (the target scale).
# In this study only the 800-example DDO completed (the 400 one stopped at 6 of 11 runs; see README).
set -e
cd "$(dirname "$0")/../.."
export PYTHONPATH=$PWD/src OMP_NUM_THREADS=1
MIX="nice -n 10 ${PYTHON:-python} -m assay.mixsearch.cli"
OVR=$(cat experiments/mixture_search/proxy_overrides.txt)
for B in 400 800; do
  $MIX ddo logs/mixsearch/ddo_$B --budget $B --factor 3 --base natural -- $OVR hydra/launcher=joblib hydra.launcher.n_jobs=1
  $MIX ddo logs/mixsearch/ddo_$B --fit --target 'val/loss/*'
done
$MIX optimal --ddo logs/mixsearch/ddo_400 logs/mixsearch/ddo_800 --budget 4000 --out experiments/mixture_search/proposed

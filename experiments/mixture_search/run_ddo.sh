#!/bin/bash
# DDO (2m+1 = 11 runs each) at 400, 800 and 1600 examples with the proxy model; AutoScale's
# extrapolation from 400 + 800 to 1600 (checked against DDO run directly at 1600, and by training
# every candidate at 1600, 3 seeds) and to 4000 (the target scale).
set -e
cd "$(dirname "$0")/../.."
export PYTHONPATH=$PWD/src OMP_NUM_THREADS=1
MIX="nice -n 10 ${PYTHON:-python} -m assay.mixsearch.cli"
E=experiments/mixture_search
OVR=$(cat $E/proxy_overrides.txt)
for B in 400 800 1600; do
  $MIX ddo logs/mixsearch/ddo_$B --budget $B --factor 3 --base natural -- $OVR hydra/launcher=joblib hydra.launcher.n_jobs=1
  $MIX ddo logs/mixsearch/ddo_$B --fit --target 'val/loss/*'
done
$MIX optimal --ddo logs/mixsearch/ddo_400 logs/mixsearch/ddo_800 --budget 4000 --out $E/proposed
${PYTHON:-python} $E/autoscale_check.py logs/mixsearch/ddo_400 logs/mixsearch/ddo_800 logs/mixsearch/ddo_1600 --mixtures-out logs/mixsearch/autoscale_candidates.txt | tee $E/autoscale_check.md
# every candidate trained at 1600 examples (the proxy model, 100 steps), 3 seeds
set -f
$MIX validate logs/mixsearch/val_autoscale $(cat logs/mixsearch/autoscale_candidates.txt) --baselines natural --seeds 0,1,2 \
  -- $OVR mixture.num_examples=1600 hydra/launcher=joblib hydra.launcher.n_jobs=1
$MIX validate logs/mixsearch/val_autoscale --report-only --target 'val/loss/*' | tee -a $E/autoscale_check.md

#!/bin/bash
# After the swarm: fit every regressor, propose with each, validate proposals at the target scale.
# fit/propose are seconds of CPU (analysis, normal priority); the validation runs train (nice 10).
set -e
cd "$(dirname "$0")/../.."
export PYTHONPATH=$PWD/src OMP_NUM_THREADS=1
MIX="${PYTHON:-python} -W ignore -m assay.mixsearch.cli"
S=logs/mixsearch/swarm64
E=experiments/mixture_search
# target: the mean of the five per-skill validation losses
$MIX fit $S --target 'val/loss/*' --regressor lightgbm,linear,log_linear,bimix,autoscale,gp --out $E/fit 2>&1 | tee $E/fit.log
# proposals at the target scale: 4000 examples, each example at most twice -> a cap of 0.75 per skill
$MIX propose $S --target 'val/loss/*' --regressor lightgbm --proposer simulation --budget 4000 --max-repetition 2 --out $E/proposed 2>&1 | tee $E/propose.log
$MIX propose $S --target 'val/loss/*' --regressor linear,log_linear,bimix,autoscale,gp --proposer optimize --budget 4000 --max-repetition 2 --out $E/proposed 2>&1 | tee -a $E/propose.log
# validation of every proposal and the best proxy at the target scale, 3 seeds, SHARDS (default 2)
# shards side by side (--dry-run writes the validation directory once; each shard then launches its part)
set -f  # the target pattern val/loss/* is not a file glob
SHARDS=${SHARDS:-2}
MIXTURES=""
for r in lightgbm linear log_linear bimix autoscale gp; do MIXTURES="$MIXTURES --mixture $E/proposed/$r.json"; done
VAL="validate logs/mixsearch/val_proposals $MIXTURES --baselines natural,best:$S --best-target val/loss/* --seeds 0,1,2"
$MIX $VAL --dry-run -- $(cat $E/target_overrides.txt) hydra/launcher=joblib hydra.launcher.n_jobs=1
for i in $(seq 0 $((SHARDS - 1))); do
  nice -n 10 $MIX $VAL --shard $i/$SHARDS > logs/mixsearch/val_proposals.shard$i.log 2>&1 &
done
wait
$MIX validate logs/mixsearch/val_proposals --report-only --target 'test/loss/*' | tee $E/validation_report.md

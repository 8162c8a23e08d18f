#!/bin/bash
# After the swarm: fit every regressor, propose with each, validate the proposals at the target scale.
set -e
cd "$(dirname "$0")/../.."
export PYTHONPATH=$PWD/src OMP_NUM_THREADS=1
MIX="nice -n 10 /work/main/.venv/bin/python -W ignore -m assay.mixsearch.cli"
S=logs/mixsearch/swarm64
E=experiments/mixture_search
# target: the mean of the five per-skill validation losses
$MIX fit $S --target 'val/loss/*' --regressor lightgbm,linear,log_linear,bimix,autoscale,gp --out $E/fit | tee $E/fit.log
# proposals at the target scale: 4000 examples, each example at most twice -> a cap of 0.75 per skill
$MIX propose $S --target 'val/loss/*' --regressor lightgbm --proposer simulation --budget 4000 --max-repetition 2 --out $E/proposed | tee $E/propose.log
$MIX propose $S --target 'val/loss/*' --regressor linear,log_linear,bimix,autoscale,gp --proposer optimize --budget 4000 --max-repetition 2 --out $E/proposed | tee -a $E/propose.log

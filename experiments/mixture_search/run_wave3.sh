#!/usr/bin/env bash
# Mixture search, wave three: the swarm, the fits (held-out Spearman over 5 folds) and the proposals
# for study.yaml's validation at the target scale. The pool is the online-mixing pool (unequal skill
# sizes: copy 1,600, reverse 800, sort 400, count 200, add 100), so natural != uniform and the target
# (the mean of the five per-skill validation losses) is not optimised by construction.
#   PYTHON=.venv/bin/python bash experiments/mixture_search/run_wave3.sh
# Resumable: a proxy with a summary.json is skipped.
set -e
cd "$(dirname "$0")/../.."
export PYTHONPATH=$PWD/src OMP_NUM_THREADS=1
MIX="${PYTHON:-python} -W ignore -m assay.mixsearch.cli"
S=logs/mixsearch/swarm256
E=experiments/mixture_search/wave3
mkdir -p logs/mixsearch $E
# Proxies: a 2-layer Llama, hidden 32, 100 steps of 16 = 1,600 examples drawn by the mixture, each
# example at most 4 times (caps: add 0.25, count 0.5 of the draw); target: val/loss/* (40 prompts a skill).
PROXY="experiment=online_mixing model.hidden_size=32 model.intermediate_size=128 model.num_layers=2 model.num_heads=2 model.num_kv_heads=2
 data.batch_size=16 trainer.max_steps=100 trainer.val_check_interval=100 eval.val_generate=false eval.generate=false logger=none dynamics=off
 trainer.enable_progress_bar=false checkpoint_every_n_steps=1000 trainer.throughput=false"
SHARDS=${SHARDS:-2}
for i in $(seq 0 $((SHARDS - 1))); do
  $MIX swarm $S -n 256 --method regmix --seed 0 --budget 1600 --max-repetition 4 --set mixture.num_examples=1600 \
    --set mixture.max_repetition=4 --shard $i/$SHARDS -- $PROXY hydra/launcher=joblib hydra.launcher.n_jobs=1 > $S.shard$i.log 2>&1 &
done
wait
set -f  # the target pattern val/loss/* is not a file glob
$MIX fit $S --target val/loss/* --regressor lightgbm,linear,log_linear,bimix,autoscale,gp --folds 5 --out $E/fit 2>&1 | tee $E/fit.log
# Proposals for the target scale: 1,000 steps of 32 = 32,000 examples, each at most 64 times (caps:
# add 0.2, count 0.4, so uniform is feasible).
$MIX propose $S --target val/loss/* --regressor lightgbm --proposer simulation --budget 32000 --max-repetition 64 --out $E/proposed 2>&1 | tee $E/propose.log
$MIX propose $S --target val/loss/* --regressor linear,log_linear,bimix,autoscale,gp --proposer optimize --budget 32000 --max-repetition 64 \
  --out $E/proposed 2>&1 | tee -a $E/propose.log

#!/usr/bin/env bash
# Projektor's two stages in full (not run yet): the 256 mixtures of wave three again at a second pilot
# size, N0 = 800 examples (50 steps of 16; wave three's N1 = 1,600), then the per-size fits extrapolated
# in log N to the target's 32,000 examples and the proposal made there. 256 proxy runs (about 15 minutes
# on the 2-core machine beside other work), then a minute of fits.
#   PYTHON=.venv/bin/python bash experiments/projektor/run_logn.sh
set -e
cd "$(dirname "$0")/../.."
export PYTHONPATH=$PWD/src OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
MIX="${PYTHON:-python} -W ignore -m assay.mixsearch.cli"
S=logs/mixsearch/swarm256_n800
E=experiments/projektor/logn
mkdir -p logs/mixsearch $E
# the proxies of run_wave3.sh (mixture_search) at half the steps; the same mixtures (--method list)
PROXY="experiment=online_mixing model.hidden_size=32 model.intermediate_size=128 model.num_layers=2 model.num_heads=2 model.num_kv_heads=2
 data.batch_size=16 trainer.max_steps=50 trainer.val_check_interval=50 eval.val_generate=false eval.generate=false logger=none dynamics=off
 trainer.enable_progress_bar=false checkpoint_every_n_steps=1000 trainer.throughput=false"
$MIX swarm $S --method list --mixtures experiments/mixture_search/wave3/swarm256_mixtures.csv --budget 800 --max-repetition 4 \
  --set mixture.num_examples=800 --set mixture.max_repetition=4 -- $PROXY hydra/launcher=joblib hydra.launcher.n_jobs=2
set -f
$MIX fit $S --target val/loss/* --regressor linear --out $E/fit800 > /dev/null
# one table of both sizes (its scale column: 800 and 1,600 examples seen), the target under a plain name
{ sed '1s#val/loss/\*#val_loss_mean#' experiments/mixture_search/wave3/fit_folds/table.csv; tail -n +2 $E/fit800/table.csv; } > $E/table.csv
[ -f experiments/projektor/wave3/pilots.npz ] || $MIX pilots experiments/projektor/wave3/pilots.npz -- experiment=online_mixing
$MIX fit $E/table.csv --target val_loss_mean --regressor lightgbm,bimix,autoscale,gp,projektor --folds 5 \
  --pilots experiments/projektor/wave3/pilots.npz --out $E/fit 2>&1 | tee $E/fit.log
$MIX propose $E/table.csv --target val_loss_mean --regressor projektor --proposer projektor --lr 0.5 --scale 32000 \
  --pilots experiments/projektor/wave3/pilots.npz --sizes '{copy:1600,reverse:800,sort:400,count:200,add:100}' --budget 32000 \
  --max-repetition 64 --out $E/proposed 2>&1 | tee $E/propose.log

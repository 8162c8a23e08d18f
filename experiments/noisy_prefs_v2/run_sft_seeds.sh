#!/usr/bin/env bash
# Check of the main grid's one shared SFT model: seeds 1-4 each with an SFT model of their own (same
# SFT command, seed=<s>), for four methods at p in {0, 0.4}. Same settings as run.sh otherwise.
#   bash experiments/noisy_prefs_v2/run_sft_seeds.sh [grid directory]
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-logs/noisy_prefs_v2_sft_seeds}
PY=${PY:-python}
export OMP_NUM_THREADS=1 PYTHONPATH=${PYTHONPATH:-$PWD/src}
mkdir -p "$OUT"
# the same spellings as run.sh's methods (a subset)
cat > "$OUT/methods.txt" <<'METHODS'
dpo           objective=dpo
rdpo          objective=rdpo objective.epsilon=0.1
dr_dpo_bp1    objective=dr_dpo objective.aggregator.beta_prime=1.0
beta_dpo      objective=beta_dpo
METHODS
SFT="data.seed=0 trainer.max_steps=300 trainer.val_check_interval=300 trainer.threads=1 trainer.enable_progress_bar=false logger=csv"
DPO="data.format=preference data.seed=0 noise=pairwise_flip data.pair_kinds=[exact_vs_near,exact_vs_far,exact_vs_garbage] \
data.max_train_examples=96 data.max_eval_examples=250 data.batch_size=16 trainer.max_steps=48 trainer.val_check_interval=16 \
trainer.log_every_n_steps=4 eval.val_generate=false optim.lr=2e-4 optim.warmup_steps=4 trainer.threads=1 \
trainer.enable_progress_bar=false logger=csv"
nice -n 5 "$PY" experiments/noisy_prefs_v2/grid.py --out "$OUT" --seeds 1,2,3,4 --flips 0.0,0.4 \
  --methods "$OUT/methods.txt" --sft "$SFT" --dpo "$DPO"
"$PY" experiments/noisy_prefs_v2/analyze.py "$OUT" experiments/noisy_prefs_v2/results_sft_seeds

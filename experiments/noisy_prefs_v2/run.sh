#!/usr/bin/env bash
# The noisy-preferences v2 grid, exactly as run for README.md: 9 methods x 3 flip rates x 5 seeds = 135
# DPO-family runs from one SFT model, then the table, paired tests and plots.
#   bash experiments/noisy_prefs_v2/run.sh [grid directory]
# Resumable: a run whose summary.json exists is skipped. One process, one thread (nice -n 5).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-logs/noisy_prefs_v2}
PY=${PY:-python}
export OMP_NUM_THREADS=1 PYTHONPATH=${PYTHONPATH:-$PWD/src}
mkdir -p "$OUT"

# Every objective override of the study, in one place: <name> <overrides...>
cat > "$OUT/methods.txt" <<'METHODS'
dpo           objective=dpo
cdpo          objective=cdpo objective.epsilon=0.1
rdpo          objective=rdpo objective.epsilon=0.1
ipo           objective=ipo
dr_dpo_bp0.5  objective=dr_dpo objective.aggregator.beta_prime=0.5
dr_dpo_bp1    objective=dr_dpo objective.aggregator.beta_prime=1.0
dr_dpo_bp2    objective=dr_dpo objective.aggregator.beta_prime=2.0
beta_dpo      objective=beta_dpo
dr_beta_dpo   objective=dr_dpo objective.aggregator.beta_prime=1.0 objective/controller=beta_dpo
METHODS

# The SFT model: 300 steps of the embedded default (a deliberately weak model, test exact match 0.51),
# trained once (seed 0) and used as init and reference of every run (see README, "Deviations").
SFT="data.seed=0 trainer.max_steps=300 trainer.val_check_interval=300 trainer.threads=1 trainer.enable_progress_bar=false logger=csv"
# Preference training: 96 pairs (a third each exact-vs-near, exact-vs-far, exact-vs-garbage), batch 16,
# 48 steps = 8 epochs, so that DPO has time to fit the flipped pairs; uniform flips on the train split;
# clean val/test pairs are exact-vs-near (the hardest kind); 250 test prompts.
DPO="data.format=preference data.seed=0 noise=pairwise_flip data.pair_kinds=[exact_vs_near,exact_vs_far,exact_vs_garbage] \
data.max_train_examples=96 data.max_eval_examples=250 data.batch_size=16 trainer.max_steps=48 trainer.val_check_interval=16 \
trainer.log_every_n_steps=4 eval.val_generate=false optim.lr=2e-4 optim.warmup_steps=4 trainer.threads=1 \
trainer.enable_progress_bar=false logger=csv"

nice -n 5 "$PY" experiments/noisy_prefs_v2/grid.py --out "$OUT" --seeds 0,1,2,3,4 --flips 0.0,0.2,0.4 \
  --methods "$OUT/methods.txt" --sft "$SFT" --dpo "$DPO" --shared-sft 0
"$PY" experiments/noisy_prefs_v2/analyze.py "$OUT" experiments/noisy_prefs_v2/results

#!/usr/bin/env bash
# The noisy-preferences grid as run for the table in README.md (75 DPO-family jobs from one SFT model).
#   bash experiments/noisy_prefs/run_grid.sh <SFT run directory> <sweep output directory> [extra overrides...]
# data.seed is pinned to the SFT run's data seed, so every job sees the same prompts (the SFT model's
# training prompts never appear in a job's test split); seed varies noise, order and the beta-DPO filter.
set -euo pipefail
SFT=${1:?SFT run directory (from: assay-train experiment=skills_sft)}
OUT=${2:-logs/noisy_prefs/multirun/grid}
shift $(( $# < 2 ? $# : 2 ))
# seed is listed first so it varies slowest: the sweep completes one whole 25-job grid per seed in turn.
exec assay-train -m \
  seed=0,1,2 objective=dpo,cdpo,rdpo,dr_dpo,beta_dpo \
  noise=pairwise_flip noise.p=0.0,0.1,0.2,0.3,0.4 \
  data.format=preference data.seed=0 model.init_from="$SFT" \
  trainer.max_steps=150 trainer.val_check_interval=150 optim.lr=1e-4 optim.warmup_steps=10 \
  logger=csv trainer.enable_progress_bar=false task_name=noisy_prefs \
  hydra.sweep.dir="$OUT" "$@"

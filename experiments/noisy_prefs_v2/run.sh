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

. experiments/noisy_prefs_v2/settings.sh  # SFT and DPO: the study's training settings

nice -n 5 "$PY" experiments/noisy_prefs_v2/grid.py --out "$OUT" --seeds 0,1,2,3,4 --flips 0.0,0.2,0.4 \
  --methods "$OUT/methods.txt" --sft "$SFT" --dpo "$DPO" --shared-sft 0
"$PY" experiments/noisy_prefs_v2/analyze.py "$OUT" experiments/noisy_prefs_v2/results

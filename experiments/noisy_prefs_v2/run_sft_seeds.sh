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
. experiments/noisy_prefs_v2/settings.sh  # the same SFT and DPO settings as run.sh
nice -n 5 "$PY" experiments/noisy_prefs_v2/grid.py --out "$OUT" --seeds 1,2,3,4 --flips 0.0,0.4 \
  --methods "$OUT/methods.txt" --sft "$SFT" --dpo "$DPO"
"$PY" experiments/noisy_prefs_v2/analyze.py "$OUT" experiments/noisy_prefs_v2/results_sft_seeds

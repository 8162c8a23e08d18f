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
. experiments/noisy_prefs_v2/settings.sh  # the same SFT and DPO settings as run.sh, and the method subset
printf '%s\n' "$SUBSET_METHODS" > "$OUT/methods.txt"
nice -n 5 "$PY" experiments/noisy_prefs_v2/grid.py --out "$OUT" --seeds 1,2,3,4 --flips 0.0,0.4 \
  --methods "$OUT/methods.txt" --sft "$SFT" --dpo "$DPO"
"$PY" experiments/noisy_prefs_v2/analyze.py "$OUT" experiments/noisy_prefs_v2/results_sft_seeds

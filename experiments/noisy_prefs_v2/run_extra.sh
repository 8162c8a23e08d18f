#!/usr/bin/env bash
# The two slices the main grid left out, each with its own DPO arm (paired by seed) and the main
# grid's settings and shared SFT model (settings.sh):
#   eps_matched: cDPO and rDPO with ε set to the true flip rate (ε = p), uniform flips, p ∈ {0.2, 0.4}
#   gap_flip:    flips whose probability grows as the reward gap shrinks (noise=gap_flip, τ = 0.25),
#                DPO, rDPO (ε = 0.1), Dr. DPO (β′ = 1), β-DPO, p ∈ {0.2, 0.4}
#   bash experiments/noisy_prefs_v2/run_extra.sh [root]      (resumable; analyze.py writes results/<slice>/)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=${1:-logs/noisy_prefs_v2}
PY=${PY:-python}
export OMP_NUM_THREADS=1 PYTHONPATH=${PYTHONPATH:-$PWD/src}
. experiments/noisy_prefs_v2/settings.sh
E=experiments/noisy_prefs_v2
mkdir -p "$ROOT/eps_matched" "$ROOT/gap_flip"

for p in 0.2 0.4; do
  printf 'dpo objective=dpo\ncdpo_eps_p objective=cdpo objective.epsilon=%s\nrdpo_eps_p objective=rdpo objective.epsilon=%s\n' "$p" "$p" > "$ROOT/eps_matched/methods_p$p.txt"
  # the SFT model lives once, in the first slice's directory; the other slices point at it
  nice -n 5 "$PY" $E/grid.py --out "$ROOT/eps_matched" --seeds 0,1,2,3,4 --flips "$p" --methods "$ROOT/eps_matched/methods_p$p.txt" \
    --sft "$SFT" --dpo "$DPO" --shared-sft 0
done
printf '%s\n' "$SUBSET_METHODS" > "$ROOT/gap_flip/methods.txt"
mkdir -p "$ROOT/gap_flip/sft"
[ -e "$ROOT/gap_flip/sft/seed=0" ] || ln -s "$(cd "$ROOT/eps_matched/sft/seed=0" && pwd)" "$ROOT/gap_flip/sft/seed=0"
nice -n 5 "$PY" $E/grid.py --out "$ROOT/gap_flip" --seeds 0,1,2,3,4 --flips 0.2,0.4 --methods "$ROOT/gap_flip/methods.txt" \
  --sft "$SFT" --dpo "${DPO/noise=pairwise_flip/noise=gap_flip} noise.temperature=0.25" --shared-sft 0
"$PY" $E/analyze.py "$ROOT/eps_matched" $E/results/eps_matched
"$PY" $E/analyze.py "$ROOT/gap_flip" $E/results/gap_flip

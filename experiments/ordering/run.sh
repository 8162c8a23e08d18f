#!/usr/bin/env bash
# Orderings on the skills corpus (SFT, no selection, no noise): one sweep directory per ordering.
#   bash experiments/ordering/run.sh [seeds] [max_steps] [output root]
#   assay-compare <root>/random <root>/curriculum <root>/anti_curriculum <root>/folding <root>/blocked \
#       <root>/interleaved --by ordering --metric test/exact_match,test/loss --out <root>/compare
# curriculum / anti_curriculum order by the corpus's difficulty column (1-3); folding (DELT, L = 3
# folds) reads the same difficulty instead of its default selection scores, which are all zero with
# selection=none; blocked / interleaved group by skill.
set -euo pipefail
SEEDS=${1:-0,1,2}
STEPS=${2:-300}
OUT=${3:-logs/ordering/multirun/grid}
COMMON=(trainer.max_steps="$STEPS" trainer.val_check_interval="$STEPS" logger=csv trainer.enable_progress_bar=false task_name=ordering)
for ordering in random curriculum anti_curriculum folding blocked interleaved; do
  extra=()
  if [ "$ordering" = folding ]; then extra=(ordering.score_from=difficulty); fi
  assay-train -m seed="$SEEDS" ordering="$ordering" "${extra[@]}" "${COMMON[@]}" hydra.sweep.dir="$OUT/$ordering"
done

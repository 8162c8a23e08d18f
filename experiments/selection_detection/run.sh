#!/usr/bin/env bash
# The selection-detection grid as run for the table in README.md.
#   bash experiments/selection_detection/run.sh [scorers...]      (default: all of them, then the baselines)
# 1. sweeps/detection_probe.yaml: one probe per corrupted pool (p = 0.2, 0.4; seeds 0-2).
# 2. sweeps/selection_detection.yaml for every scorer and rate: score with the probe, keep 1 - p of the
#    pool, train from scratch on it. Baselines: `none` (everything) and `random` (same size).
# The 3 seeds of a sweep run side by side, one torch thread each (the tiny model gains little from a
# second thread, and 3 jobs keep both cores busy to the end).
# Output: logs/selection_detection/{probes,<scorer>/p<rate>}/...; then
#   python experiments/selection_detection/table.py logs/selection_detection
set -euo pipefail
ROOT=${ASSAY_DETECTION_ROOT:-logs/selection_detection}
PARALLEL=(hydra/launcher=local_parallel hydra.launcher.n_jobs=3 trainer.threads=1)
SCORERS=("$@")
if [ ${#SCORERS[@]} -eq 0 ]; then
  SCORERS=(none random perplexity ifd el2n grand cartography forgetting clues less lqs embed_sim kmeans_diverse lava gotd forward_inf)
fi
# Per-scorer settings for noise detection (everything else is the scorer's default):
#   cartography: the `easy` region (high mean confidence); mislabeled examples sit in the hard one.
#   clues: selector=top at the same budget as the others, instead of its anchor-quantile threshold.
#   less: projection to 1,024 dimensions (LESS: 8,192) to fit the CPU budget.
#   forward_inf: its defaults (one Adam step of lr 5e-3 on the 200 clean val examples, from the probe's final
#     weights); added after the table was made and not run yet.
declare -A EXTRA=(
  [cartography]="selection.region=easy"
  [clues]="selection/selector=top"
  [less]="selection.proj_dim=1024"
)
assay-fetch minilm >/dev/null
if [ ! -f "$ROOT/probes/p0.4_seed2/summary.json" ]; then
  assay-train -m sweep=detection_probe "${PARALLEL[@]}" paths.log_dir="$(dirname "$ROOT")"
fi
for scorer in "${SCORERS[@]}"; do
  for p in 0.2 0.4; do
    keep=$(python3 -c "print(round(1 - $p, 2))")
    # every scorer but the baselines reads that seed's probe (its weights, checkpoints or per-sample store)
    size=(selection.selector.fraction="$keep" 'selection.dynamics_from=${paths.log_dir}/selection_detection/probes/p${noise.p}_seed${seed}')
    if [ "$scorer" = none ]; then size=(); fi
    if [ "$scorer" = random ]; then size=(selection.selector.fraction="$keep"); fi
    # shellcheck disable=SC2086
    assay-train -m sweep=selection_detection selection="$scorer" noise.p="$p" "${size[@]}" ${EXTRA[$scorer]:-} \
      "${PARALLEL[@]}" paths.log_dir="$(dirname "$ROOT")" hydra.sweep.dir="$ROOT/$scorer/p$p"
  done
done

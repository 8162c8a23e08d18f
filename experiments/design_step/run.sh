#!/usr/bin/env bash
# One cell of a committed table per group the design step touched, run from two checkouts: the commit
# before the step and this one. Every metric must be equal (the step moves no number).
#   bash experiments/design_step/run.sh <checkout before> <checkout after> [output root]
# Each checkout runs its own code (PYTHONPATH=<checkout>/src) with its own spelling of the same
# overrides (the step renamed selection.fraction -> selection.selector.fraction and
# objective.dr_beta_prime -> objective.aggregator.beta_prime; the presets are spelled the same).
set -euo pipefail
BEFORE=$(realpath "${1:?checkout before the step}")
AFTER=$(realpath "${2:?checkout after the step}")
OUT=$(realpath -m "${3:-logs/design_step}")
PY=${PYTHON:-python}
train() {  # checkout, run dir, overrides...
  local src=$1 dir=$2; shift 2
  [ -f "$dir/summary.json" ] || (cd "$src" && PYTHONPATH="$src/src" OMP_NUM_THREADS=1 "$PY" -m assay.train "$@" logger=csv \
    trainer.enable_progress_bar=false hydra.run.dir="$dir" >/dev/null)
}
# A shared starting model for the preference cells (SFT, 300 steps, from the checkout before the step).
train "$BEFORE" "$OUT/sft" experiment=skills_sft trainer.max_steps=300 trainer.val_check_interval=300
for side in before after; do
  src=$BEFORE; [ "$side" = after ] && src=$AFTER
  frac=selection.fraction; [ "$side" = after ] && frac=selection.selector.fraction
  # objectives: experiments/noisy_prefs (Dr. DPO and beta-DPO at 20% flips, seed 0)
  for objective in dr_dpo beta_dpo; do
    train "$src" "$OUT/$side/noisy_prefs_$objective" objective=$objective noise=pairwise_flip noise.p=0.2 data.format=preference \
      data.seed=0 seed=0 model.init_from="$OUT/sft" trainer.max_steps=150 trainer.val_check_interval=150 optim.lr=1e-4 optim.warmup_steps=10
  done
  # selection + OT: experiments/gotd (GOT-D toward `add`, 20% of the pool, seed 0)
  train "$src" "$OUT/$side/gotd" seed=0 selection=gotd selection.embedder=minilm "selection.target_sources=[add]" data.seed=0 \
    "$frac=0.2" trainer.max_steps=600 trainer.val_check_interval=600 task_name=gotd
  # mixing: experiments/online_mixing (ODM, seed 0)
  train "$src" "$OUT/$side/online_mixing_odm" experiment=online_mixing seed=0 mixture=odm mixture.update_every=1
done
"$PY" - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = []
for cell in sorted(p.name for p in (out / "before").iterdir()):
    a = json.loads((out / "before" / cell / "summary.json").read_text())["metrics"]
    b = json.loads((out / "after" / cell / "summary.json").read_text())["metrics"]
    shared = sorted(set(a) & set(b))
    differ = [k for k in shared if a[k] != b[k] and not (a[k] != a[k] and b[k] != b[k])]
    rows.append((cell, len(shared), differ, {k: (a[k], b[k]) for k in ("test/loss", "test/exact_match", "test/pref_acc", "test/exact_match/add") if k in shared}))
print("| cell | metrics compared | differing | headline (before = after) |\n|---|---|---|---|")
for cell, n, differ, head in rows:
    print(f"| {cell} | {n} | {', '.join(differ) or 'none'} | " + ", ".join(f"{k} {v[0]:.6g} = {v[1]:.6g}" if v[0] == v[1] else f"{k} {v[0]:.6g} vs {v[1]:.6g}" for k, v in head.items()) + " |")
PY

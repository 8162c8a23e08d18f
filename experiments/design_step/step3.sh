#!/usr/bin/env bash
# Design step 3 (run machinery in assay.run, collaborative rules as a registry, one module per online
# mixer with declared signals, base classes out of __init__, modules split under 400 lines) moves no
# number: one cell of a committed table per group it touched, run from the commit before the step and
# from the commit after it, each with its own spelling of the same overrides; every metric compared.
#   bash experiments/design_step/step3.sh <checkout before> <checkout after> [output root] [checkout before, DoReMi]
# The faithful DoReMi (mixture=doremi, group DRO) arrived inside the step, so its cell's "before" is
# the first commit with it that imports (the fourth argument; README.md says which); every other cell's
# "before" is the first.
set -euo pipefail
BEFORE=$(realpath "${1:?checkout before the step}")
AFTER=$(realpath "${2:?checkout after the step}")
OUT=$(realpath -m "${3:-logs/design_step3}")
DOREMI_BEFORE=$(realpath "${4:-$1}")
PY=${PYTHON:-python}
HERE=$(dirname "$(realpath "$0")")
train() {  # checkout, run dir, overrides...
  local src=$1 dir=$2; shift 2
  [ -f "$dir/summary.json" ] || (cd "$src" && PYTHONPATH="$src/src" OMP_NUM_THREADS=1 "$PY" -m assay.train "$@" logger=csv \
    trainer.enable_progress_bar=false hydra.run.dir="$dir" >"$dir.log" 2>&1 || { echo "failed: $dir (see $dir.log)"; exit 1; })
}
mkdir -p "$OUT/before" "$OUT/after"
# Shared inputs, from the checkout before the step: an SFT model (300 steps) for the preference cells
# and seed 0's natural run of the online-mixing study (DoReMi's reference).
train "$BEFORE" "$OUT/sft" experiment=skills_sft trainer.max_steps=300 trainer.val_check_interval=300
train "$BEFORE" "$OUT/natural" experiment=online_mixing seed=0 mixture=single
side() {
  local side=$1 src=$2 doremi_src=$3
  local probe=() resample=mixture=doremi
  [ "$side" = after ] && probe=(mixture.graph_estimate=gradient_probe) && resample=mixture=doremi_resample
  # objectives: experiments/noisy_prefs (Dr. DPO and beta-DPO at 20% flips, seed 0)
  for objective in dr_dpo beta_dpo; do
    train "$src" "$OUT/$side/noisy_prefs_$objective" objective=$objective noise=pairwise_flip noise.p=0.2 data.format=preference \
      data.seed=0 seed=0 model.init_from="$OUT/sft" trainer.max_steps=150 trainer.val_check_interval=150 optim.lr=1e-4 optim.warmup_steps=10
  done
  # selection + OT + embeddings: experiments/gotd (GOT-D toward `add`, 20% of the pool, seed 0)
  train "$src" "$OUT/$side/gotd" seed=0 selection=gotd selection.embedder=minilm "selection.target_sources=[add]" data.seed=0 \
    selection.selector.fraction=0.2 trainer.max_steps=600 trainer.val_check_interval=600 task_name=gotd
  # online mixers: experiments/online_mixing (seed 0): ODM, Skill-it with the gradient-probe graph, DoReMi's resampling variant
  train "$src" "$OUT/$side/online_mixing_odm" experiment=online_mixing seed=0 mixture=odm mixture.update_every=1
  train "$src" "$OUT/$side/online_mixing_skill_it_probe" experiment=online_mixing seed=0 mixture=skill_it mixture.update_every=20 "${probe[@]}"
  train "$src" "$OUT/$side/online_mixing_doremi_resample" experiment=online_mixing seed=0 $resample mixture.reference="$OUT/natural" mixture.update_every=1
  # faithful DoReMi, three stages in one command (reference -> group-DRO proxy -> main on the average weights)
  train "$doremi_src" "$OUT/$side/doremi_three_stages" experiment=doremi seed=0 trainer.max_steps=100 trainer.val_check_interval=100
  # collaborative: experiments/collaborative's CLUES global threshold arm (FedAvg on Flower's simulation engine), seed 0
  train "$src" "$OUT/$side/collaborative_clues" seed=0 collab=skills4 "data.domains=[copy,reverse,sort,add]" data.train_per_domain=100 \
    data.val_per_domain=10 data.test_per_domain=25 data.batch_size=16 data.eval_batch_size=100 eval.max_new_tokens=8 model.lora.r=16 \
    "model.lora.target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]" optim.lr=5e-3 collab.rounds=3 \
    collab.local_steps=8 collab.eval_every_round=false selection=clues
}
side before "$BEFORE" "$DOREMI_BEFORE" &
side after "$AFTER" "$AFTER" &
wait
"$PY" "$HERE/compare.py" "$OUT"

#!/usr/bin/env bash
# The collaborative experiment: four skills, one client each (non-IID), 0/20/40/60 % corrupted
# completions, LoRA adapters on the tiny model trained together on Flower's simulation engine.
#   bash experiments/collaborative/run.sh <out_dir> <seed> [condition ...]
# One process per run; conditions run in the order given (default: all).
set -u
OUT=${1:?out dir}; SEED=${2:?seed}; shift 2
COMMON=(logger=none collab=skills4 "data.domains=[copy,reverse,sort,add]" data.train_per_domain=100 data.val_per_domain=10
        data.test_per_domain=25 data.batch_size=16 data.eval_batch_size=100 eval.max_new_tokens=8
        model.lora.r=16 "model.lora.target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]" optim.lr=5e-3
        collab.rounds=3 collab.local_steps=8 collab.eval_every_round=false trainer.enable_progress_bar=false seed=$SEED)
declare -A COND=(
  [a_local]="collab/aggregation=local selection=none"
  [b_fedavg_all]="selection=none"
  [c_clues_global]="selection=clues"
  [d_clues_client_top70]="selection=clues selection/selector=top selection.selector.fraction=0.7"
  [e_el2n_global]="selection=el2n selection/selector=anchor_quantile"
  [e_ppl_global]="selection=perplexity selection/selector=anchor_quantile"
  [f_oracle]="selection=none collab.oracle=true collab.warmup_rounds=0"
  [m_merge_all]="collab/aggregation=ties_factors selection=none"
  [m_merge_clues]="collab/aggregation=ties_factors selection=clues"
)
ORDER=("$@"); [ ${#ORDER[@]} -eq 0 ] && ORDER=(c_clues_global b_fedavg_all d_clues_client_top70 f_oracle e_el2n_global e_ppl_global a_local m_merge_clues m_merge_all)
for c in "${ORDER[@]}"; do
  dir="$OUT/$c/seed$SEED"
  [ -f "$dir/summary.json" ] && continue
  mkdir -p "$dir"
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=1 nice -n 10 assay-train "${COMMON[@]}" ${COND[$c]} "hydra.run.dir=$dir" ckpt_path=last > "$dir.log" 2>&1 \
    && echo "$(date -u +%H:%M:%S) done $c seed$SEED" || echo "$(date -u +%H:%M:%S) FAILED $c seed$SEED (see $dir.log)"
done

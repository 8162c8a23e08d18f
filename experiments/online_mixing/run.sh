#!/usr/bin/env bash
# Static vs online mixtures on the skills corpus, five skills as five domains of unequal size
# (conf/experiment/online_mixing.yaml). For each seed, in order:
#   natural      mixture=single                       (pool as it is: copy 1600 ... add 100)
#   uniform      mixture=weights, every domain 1      (static resampling, up to 16 epochs of a domain)
#   temperature  mixture=temperature, T=2             (p ∝ n^(1/2))
#   doremi       mixture=doremi, reference = this seed's natural run (its final model)
#   doremi_avg   (RETRAIN=1 only) mixture=weights = DoReMi's average weights, a fresh model (the DoReMi recipe)
#   odm          mixture=odm (EXP3, update every step)
#   skill_it     mixture=skill_it (graph by gradient probe, update every 20 steps)
#   bash experiments/online_mixing/run.sh [seeds] [output root]
#   ARMS="odm skill_it" bash experiments/online_mixing/run.sh "0"      # only these arms
# A run whose summary.json exists is skipped, so lanes of (arms, seeds) can run side by side.
set -euo pipefail
ARMS=${ARMS:-"natural uniform temperature doremi doremi_avg odm skill_it"}
SEEDS=${1:-"0 1 2"}
OUT=${2:-logs/online_mixing/grid}
TRAIN=${ASSAY_TRAIN:-assay-train}
COMMON=(experiment=online_mixing logger=csv)
for seed in $SEEDS; do
  run() {
    local arm=$1; shift
    case " $ARMS " in *" $arm "*) ;; *) return 0 ;; esac
    [ -f "$OUT/$arm/seed$seed/summary.json" ] || nice -n 10 "$TRAIN" "${COMMON[@]}" seed="$seed" "$@" hydra.run.dir="$OUT/$arm/seed$seed"
  }
  run natural mixture=single
  run uniform mixture=weights 'mixture.weights={copy:1,reverse:1,sort:1,count:1,add:1}' mixture.max_repetition=16
  run temperature mixture=temperature mixture.temperature=2 mixture.max_repetition=16
  run doremi mixture=doremi mixture.reference="$OUT/natural/seed$seed" mixture.update_every=1
  if [ "${RETRAIN:-0}" = 1 ] && [ -f "$OUT/doremi/seed$seed/mixing.json" ]; then
  avg=$(python -c "import json,sys; w=json.load(open(sys.argv[1]))['average_weights']; print('{'+','.join(f'{k}:{v:.6f}' for k,v in w.items())+'}')" "$OUT/doremi/seed$seed/mixing.json")
  run doremi_avg mixture=weights "mixture.weights=$avg" mixture.max_repetition=16
  fi
  run odm mixture=odm mixture.update_every=1
  run skill_it mixture=skill_it mixture.graph_estimate=gradient_probe mixture.update_every=20
done

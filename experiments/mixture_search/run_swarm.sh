#!/bin/bash
# The 64-proxy swarm, launched as SHARDS (default 2) shards side by side (each an ordinary joblib multirun with 1 job).
# Re-running this script launches only the proxies without a completed summary.
cd "$(dirname "$0")/../.."
export PYTHONPATH=$PWD/src OMP_NUM_THREADS=1
SHARDS=${SHARDS:-2}
mkdir -p logs/mixsearch
for i in $(seq 0 $((SHARDS - 1))); do
  nice -n 10 ${PYTHON:-python} -m assay.mixsearch.cli swarm logs/mixsearch/swarm64 -n 64 --method regmix --seed 0 \
    --set mixture.num_examples=1600 --shard $i/$SHARDS -- $(cat experiments/mixture_search/proxy_overrides.txt) \
    hydra/launcher=joblib hydra.launcher.n_jobs=1 > logs/mixsearch/swarm64.shard$i.log 2>&1 &
done
wait

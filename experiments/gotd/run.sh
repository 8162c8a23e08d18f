#!/usr/bin/env bash
# GOT-D vs random vs embed_sim (RDS+) for one target skill.
#   bash experiments/gotd/run.sh [seeds] [max_steps] [output root] [kept fraction] [extra overrides...]
# Pool: the five-skill training pool (7,500 examples). Target: the 40 validation examples of `add`.
# Each method keeps a fraction of the pool (default 20% = 1,500 examples); the model trains from scratch on that
# selection and is scored on held-out `add` prompts (test/exact_match/add). data.seed is pinned so
# every job sees the same pool and test prompts; seed varies the selection tie-breaks, order and init.
set -euo pipefail
SEEDS=${1:-0,1,2}
STEPS=${2:-600}
OUT=${3:-logs/gotd/multirun/grid}
FRACTION=${4:-0.2}
shift $(( $# < 4 ? $# : 4 ))
COMMON=(data.seed=0 selection.selector.fraction="$FRACTION" trainer.max_steps="$STEPS" trainer.val_check_interval="$STEPS"
        logger=csv trainer.enable_progress_bar=false task_name=gotd "$@")
assay-fetch minilm >/dev/null
assay-train -m seed="$SEEDS" selection=gotd selection.embedder=minilm selection.target_sources=[add] "${COMMON[@]}" hydra.sweep.dir="$OUT/gotd"
assay-train -m seed="$SEEDS" selection=embed_sim selection.target_sources=[add] "${COMMON[@]}" hydra.sweep.dir="$OUT/embed_sim"
assay-train -m seed="$SEEDS" selection=random "${COMMON[@]}" hydra.sweep.dir="$OUT/random"

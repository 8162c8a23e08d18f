"""Run the noisy-preferences v2 grid in one process, resumably (run.sh holds the settings).

    python grid.py --out DIR --seeds 0,1,2,3,4 --flips 0,0.2,0.4 --methods FILE --sft "OVERRIDES" --dpo "OVERRIDES"

For every seed: one SFT model (``DIR/sft/seed=<s>``; with ``--shared-sft S`` the model of seed S for all), then every (flip rate, method) cell as a DPO-family
run initialised from it and using it as the reference (``DIR/runs/seed=<s>/p=<p>/<method>``). A run whose
``summary.json`` exists is skipped, so the script resumes where it stopped. Runs share this process (the
imports cost seconds per process on a busy machine); each writes its own run directory and train.log.
``--methods`` is a file of lines ``<name> <override> <override> ...``: the only place the objectives are named.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import traceback
from pathlib import Path


def run_one(overrides: list[str], run_dir: Path) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from assay.paths import CONF_DIR
    from assay.train import run

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            cfg.paths.output_dir = str(run_dir)
        try:
            run(cfg)
        finally:
            GlobalHydra.instance().clear()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", required=True)
    ap.add_argument("--flips", required=True)
    ap.add_argument("--methods", required=True)
    ap.add_argument("--sft", default="")
    ap.add_argument("--dpo", default="")
    ap.add_argument("--shared-sft", default=None, help="one SFT model (of this seed) for every seed")
    args = ap.parse_args()
    out = Path(args.out)
    methods = [line.split(None, 1) for line in Path(args.methods).read_text().splitlines() if line.strip() and not line.startswith("#")]
    failures = 0
    for seed in args.seeds.split(","):
        sft_seed = args.shared_sft if args.shared_sft is not None else seed
        sft = (out / "sft" / f"seed={sft_seed}").resolve()
        if not (sft / "summary.json").exists():
            started = time.time()
            run_one([f"seed={sft_seed}", *shlex.split(args.sft)], sft)
            print(f"sft seed={seed}: {time.time() - started:.0f} s", flush=True)
        for p in args.flips.split(","):
            for name, overrides in methods:
                run_dir = out / "runs" / f"seed={seed}" / f"p={p}" / name
                if (run_dir / "summary.json").exists():
                    continue
                started = time.time()
                try:
                    run_one([f"seed={seed}", f"model.init_from='{sft}'", f"noise.p={p}", *shlex.split(args.dpo), *shlex.split(overrides)], run_dir)
                    print(f"seed={seed} p={p} {name}: {time.time() - started:.0f} s", flush=True)
                except Exception:
                    traceback.print_exc()
                    print(f"FAILED seed={seed} p={p} {name}", flush=True)
                    failures += 1
                    if failures >= 3:
                        sys.exit("three runs failed; stopping")
    sys.exit(0)


if __name__ == "__main__":
    main()

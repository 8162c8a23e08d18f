"""The training pool a swarm draws from: domain sizes (for the natural prior and repetition caps)."""

from __future__ import annotations

from typing import Sequence

from assay.errors import UserError


def pool_sizes(overrides: Sequence[str]) -> dict[str, int]:
    """Examples per domain (the ``source`` column) of the training split the runs would load."""
    train = pool_splits(overrides)["train"]
    sizes: dict[str, int] = {}
    for s in train["source"]:
        sizes[s] = sizes.get(s, 0) + 1
    return dict(sorted(sizes.items()))


def pool_splits(overrides: Sequence[str]):
    """The splits (train, val, test) the runs with these overrides would load, after the example caps."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from assay.config import validate
    from assay.paths import CONF_DIR

    kept = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="train", overrides=list(kept), return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            spec = validate(cfg)
    except UserError:
        raise
    except Exception as e:  # composition errors are the user's
        from assay.errors import explain

        raise UserError("overrides", " ".join(kept), explain(e)) from None
    finally:
        GlobalHydra.instance().clear()
    return spec.data.capped(spec.data.load())

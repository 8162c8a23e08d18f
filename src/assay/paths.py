"""Where assay's own files are (the Hydra config directory), and where a run's files go: a run
directory of its own, claimed through the ``assay.unique`` resolver.

Hydra names a run directory after the second it started, so two runs started in the same second
would write into one directory. ``conf/train.yaml``'s ``hydra.run.dir`` / ``hydra.sweep.dir`` go
through ``assay.unique``, which *claims* the directory with an exclusive ``mkdir`` (atomic on local
filesystems and on NFS) and takes the next free ``<name>_1``, ``<name>_2``, ... when another run got
there first. The resolver is registered on import: everything that composes the config finds
CONF_DIR here.
"""

from pathlib import Path

from omegaconf import OmegaConf

from assay.errors import UserError

_HERE = Path(__file__).resolve().parent
# An editable install (and the source tree) has conf/ at the repository root; a wheel ships it inside the package.
CONF_DIR = next((p for p in (_HERE.parents[1] / "conf", _HERE / "conf") if (p / "train.yaml").is_file()), _HERE / "conf")

RESOLVER = "assay.unique"


def claim_unique_dir(base: str) -> str:
    """Create ``base`` (or the first free ``base_1``, ``base_2``, ...) exclusively; return its path."""
    path = Path(base)
    path.parent.mkdir(parents=True, exist_ok=True)
    for n in range(10_000):
        candidate = path if n == 0 else path.with_name(f"{path.name}_{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return str(candidate)
    raise UserError("hydra.run.dir", base, "10000 run directories of this name exist already")


def register_resolver() -> None:
    if not OmegaConf.has_resolver(RESOLVER):
        # use_cache: one claim per config; Hydra copies the cache into each job's config.
        OmegaConf.register_new_resolver(RESOLVER, claim_unique_dir, use_cache=True)


register_resolver()

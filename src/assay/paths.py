"""Where assay's own files are: the Hydra config directory."""

from pathlib import Path

_HERE = Path(__file__).resolve().parent
# An editable install (and the source tree) has conf/ at the repository root; a wheel ships it inside the package.
CONF_DIR = next((p for p in (_HERE.parents[1] / "conf", _HERE / "conf") if (p / "train.yaml").is_file()), _HERE / "conf")

# conf/train.yaml names run directories through the ``assay.unique`` resolver: registered wherever
# the config is composed (everything that composes it finds CONF_DIR here).
import assay.rundir  # noqa: E402,F401

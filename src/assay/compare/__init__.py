"""``assay-compare``: a sweep (or any set of runs) -> one table, CSV, Markdown and plots.

``readers`` reads runs (local run directories and sweeps, wandb offline directories, the wandb
server), ``table`` groups them over seeds, ``plots`` draws them, ``cli`` is the command.
"""

from assay.compare.cli import compare, main
from assay.compare.plots import expand_curves, plot_curves, plot_metrics
from assay.compare.readers import CURVES, Run, collect, is_run_dir, is_wandb_run_dir, read_local_run, read_sweep, read_wandb_api, read_wandb_offline
from assay.compare.table import aggregate, check_keys, choose_metrics, fmt, markdown, runs_frame, varying_keys
from assay.run.results import HEADLINE, flatten

__all__ = [
    "CURVES", "HEADLINE", "Run", "aggregate", "check_keys", "choose_metrics", "collect", "compare", "expand_curves", "flatten", "fmt",
    "is_run_dir", "is_wandb_run_dir", "main", "markdown", "plot_curves", "plot_metrics", "read_local_run", "read_sweep", "read_wandb_api",
    "read_wandb_offline", "runs_frame", "varying_keys",
]

"""Examples: sources -> mixture -> noise, one ``datasets.DatasetDict`` with stable ids.

- ``examples``: the run's examples built from its data, mixture and noise options
- ``sources``, ``tables``, ``skills``, ``multisource``: the data options; ``schemas``: row mappings;
  ``file_checks``: what local files are checked for before loading
- ``mixture``: the static mixture options; ``allocation``: how shares become counts; ``weights``:
  weight numerics every mixture shares
- ``noise``: injected noise; ``text``, ``collate``, ``datamodule``, ``rewards``: tokenization,
  batches and the Lightning data module
"""

from assay.data.examples import Examples, build_examples, build_examples_and_model, load_pool

__all__ = ["Examples", "build_examples", "build_examples_and_model", "load_pool"]

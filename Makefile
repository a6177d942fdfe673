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

# Style, the layering contract (cli > service | diffusers_plugin > registry | resolver > sdk) and types.
# mypy cannot follow the editable install's import hook, so the package folders are
# linked under build/mypy/photoimmune/ where they have their installed names.
MYPY_ROOT := build/mypy/photoimmune
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	mkdir -p $(MYPY_ROOT) && touch $(MYPY_ROOT)/__init__.py
	for p in sdk registry resolver diffusers_plugin service cli; do ln -sfn ../../../$$p $(MYPY_ROOT)/$$p; done
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build *.egg-info

# Long fuzzing (docs/security.md): the fuzz tests with FUZZ_EXAMPLES random examples each
# (failures are kept in FUZZ_DIR and replayed first next time), then every target of
# tests/test_fuzz.py coverage-guided under atheris for FUZZ_SECONDS (crashes in FUZZ_DIR).
FUZZ_EXAMPLES ?= 5000
FUZZ_SECONDS ?= 120
FUZZ_DIR := .pytest_cache/photoimmune-fuzz
FUZZ_ENV := PHOTOIMMUNE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) HF_HUB_OFFLINE=1

.PHONY: fuzz
fuzz: venv
	$(FUZZ_ENV) $(PY) -m pytest tests/test_fuzz.py tests/test_registry_api_fuzz.py \
		--hypothesis-show-statistics $(PYTEST_ARGS)
	@if ! $(PY) -c 'import atheris' 2>/dev/null; then \
		echo "atheris is not installed here: skipping the coverage-guided runs"; exit 0; fi; \
	for target in $$($(PY) tests/test_fuzz.py --list); do \
		echo "== $$target: $(FUZZ_SECONDS) s under atheris"; \
		mkdir -p $(FUZZ_DIR)/corpus/$$target || exit 1; \
		$(FUZZ_ENV) $(PY) tests/test_fuzz.py $$target -max_total_time=$(FUZZ_SECONDS) \
			-max_len=8192 -timeout=120 -print_final_stats=1 \
			-artifact_prefix=$(FUZZ_DIR)/crash-$$target- $(FUZZ_DIR)/corpus/$$target \
			|| exit 1; \
	done

# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
APP_STAMP := $(VENV)/.app-stamp
TEST_STAMP := $(VENV)/.test-stamp

.PHONY: demo test lint check-defs install ui clean

# The demo and the UI need only the package; the tests also need the dev tools and the `formats` extra (CPU
# torch + diffusers). setuptools stays below 81, whose removal of pkg_resources breaks face_recognition_models.
$(APP_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "setuptools>=77.0.3,<81"
	$(BIN)/pip install -q -e .
	touch $(APP_STAMP)

# CPU torch first (the formats extra pins the same version), so pip never picks a CUDA build
$(TEST_STAMP): $(APP_STAMP)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev,formats]"
	touch $(TEST_STAMP)

install: $(TEST_STAMP)

demo: $(APP_STAMP)
	$(BIN)/lora-pipelines demo

test: $(TEST_STAMP)
	$(BIN)/pytest -p no:cacheprovider -ra $(PYTEST_ARGS)

lint: $(TEST_STAMP)
	$(BIN)/ruff check .

# loads lora_pipelines.definitions the way `dagster dev` does ([tool.dg] in pyproject.toml); VIRTUAL_ENV tells dg
# that .venv is the active environment (otherwise it warns that they differ)
check-defs: $(TEST_STAMP)
	VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/dg check defs

ui: $(APP_STAMP)
	DAGSTER_HOME=$${DAGSTER_HOME:-$$PWD/.lora_pipelines/dagster_home} $(BIN)/dagster dev -w workspace.yaml

clean:
	rm -rf .lora_pipelines test-artifacts

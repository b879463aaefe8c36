# Two commands for users: `make run` (install + run the bot) and `make test` (install + run the tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU wheel by default. For an NVIDIA GPU: make run TORCH="torch --index-url https://download.pytorch.org/whl/cu128"
TORCH ?= torch==2.13.0
# The tested versions (constraints.txt), for every install: here, in .ci/run and in the Dockerfile.
PIP_INSTALL := $(PY) -m pip install -q -c constraints.txt
CONFIG ?= $(if $(wildcard config.toml),config.toml,config.example.toml)

.PHONY: install run demo download test bench bench-gpu clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PIP_INSTALL) $(TORCH)
	$(PIP_INSTALL) -e '.[test,bench,ray]'
	$(PIP_INSTALL) -e '.[web,web-test]'  # web front end: FastAPI, uvicorn, jinja2, vtracer; httpx + Playwright for its tests
	touch $@

run: install
	$(VENV)/bin/imagine-bot run --config $(CONFIG)

download: install
	$(VENV)/bin/imagine-bot download --config $(CONFIG)

demo: install
	$(VENV)/bin/imagine-bot run --model tiny --config $(CONFIG)

test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

bench: install
	$(PY) bench/cpu_bench.py

bench-gpu: install
	$(PY) bench/gpu_bench.py

# The documentation site from docs/ into site/ (mkdocs.yml). Strict: a warning, such as a link to a
# missing page or anchor, fails the build. Its hook generates the config and HTTP API references.
.PHONY: docs
docs: $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 HF_HUB_OFFLINE=1 $(PY) -m mkdocs build --strict

$(VENV)/.docs-installed: $(VENV)/.installed
	$(PIP_INSTALL) -e '.[web,docs]'
	touch $@

clean:
	rm -rf $(VENV) out site .pytest_cache

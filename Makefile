# Two commands for users: `make run` (install what running needs + run the bot) and `make test`
# (install the test extras too + run the tests). `make install` installs only.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU wheel by default. For an NVIDIA GPU: make run TORCH="torch --index-url https://download.pytorch.org/whl/cu128"
TORCH ?= torch==2.13.0
# The tested versions (constraints.txt), for every install: here, in .ci/run and in the Dockerfile.
PIP_INSTALL := $(PY) -m pip install -q -c constraints.txt
CONFIG ?= $(if $(wildcard config.toml),config.toml,config.example.toml)

.PHONY: install install-test run demo download test bench bench-gpu clean

# What running needs: the bot and its web front end ([web] in the config). `make test` adds the rest.
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PIP_INSTALL) $(TORCH)
	$(PIP_INSTALL) -e '.[web]'  # FastAPI, uvicorn, jinja2, vtracer
	@echo "Installed into $(VENV). The command is $(VENV)/bin/imagine-bot (or: source $(VENV)/bin/activate, then imagine-bot)."
	touch $@

# The tests' and benchmarks' extras: pytest, hypothesis, onnx; matplotlib; Ray Serve; httpx and
# Playwright (it drives Debian's Chromium: never `playwright install`); torchmetrics; mlflow-skinny.
install-test: $(VENV)/.installed-test

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP_INSTALL) -e '.[web,test,bench,ray,web-test,eval,mlflow]'
	touch $@

run: install
	@$(VENV)/bin/imagine-bot run --config $(CONFIG)

download: install
	@$(VENV)/bin/imagine-bot download --config $(CONFIG)

demo: install
	@$(VENV)/bin/imagine-bot run --model tiny --config $(CONFIG)

test: install-test
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

bench: install-test
	$(PY) bench/cpu_bench.py

bench-gpu: install-test
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

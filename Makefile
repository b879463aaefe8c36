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

clean:
	rm -rf $(VENV) out .pytest_cache

# Two commands for users: `make run` (install + run the bot) and `make test` (install + run the tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU wheel by default. For an NVIDIA GPU: make run TORCH="torch --index-url https://download.pytorch.org/whl/cu128"
TORCH ?= torch==2.13.0
CONFIG ?= $(if $(wildcard config.toml),config.toml,config.example.toml)

.PHONY: install run demo test bench bench-gpu clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test,bench]'
	$(PY) -m pip install -q -e '.[web]'  # web front end: FastAPI, uvicorn, jinja2, vtracer; httpx + Playwright for its tests
	touch $@

run: install
	$(VENV)/bin/imagine-bot run --config $(CONFIG)

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

# The few verbs people type. `make demo` and `make test` install what they need first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is installed first and pinned: this version is a CPU build on the project's
# machines, while an unpinned `torch` would pull gigabytes of CUDA packages.
TORCH ?= torch==2.13.0
# the learned voice print (GE2E) reads only the weights inside this wheel, never imports it:
# installed without its dependencies, whose webrtcvad would need a C compiler
VOICE_ENCODER ?= resemblyzer==0.1.4

.PHONY: install demo test lint format clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps $(VOICE_ENCODER)
	# librosa's kernels compiled once, here, before two notebooks or commands could race to (diarize.py)
	$(PY) -c "from minitalk.prepare import diarize; diarize.compile_librosa()"
	touch $@

demo: install
	$(VENV)/bin/minitalk demo

test: install
	$(PY) -m pytest --nbval --nbval-sanitize-with notebooks/nbval_sanitize.cfg

lint: install
	$(VENV)/bin/ruff check minitalk tests benchmarks notebooks

format: install
	$(VENV)/bin/ruff format minitalk tests benchmarks

clean:
	rm -rf $(VENV) demo_out .pytest_cache .ruff_cache

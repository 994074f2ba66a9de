# Two commands do all set-up on a fresh machine (Python 3.11 with venv):
#   make reproduce   the main job: the reproduction on the embedded synthetic dataset (cpu profile)
#   make test        unit tests (+ notebooks via nbval once they exist)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= cpu

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e '.[notebooks,test]'
	touch $@

.PHONY: install reproduce test
install: $(VENV)/.installed

reproduce: $(VENV)/.installed
	$(PY) -m glamd_core reproduce --profile $(PROFILE)

test: $(VENV)/.installed
	$(PY) -m pytest

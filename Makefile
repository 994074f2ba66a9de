# Two commands do all set-up on a fresh machine (Python 3.11 with venv):
#   make reproduce   the main job: every experiment notebook at the cpu profile (papermill) -> results/
#   make test        unit tests + every notebook via nbval at the smoke profile, then the paper check
#   make paper-check the paper_voc / paper_coco settings end to end on CPU (torchrun, 2 processes; ~2.5-3.5 min)
#   make consistency one AP per run name and one teacher per kind across results/ (also a test)
#   make lab         JupyterLab on notebooks/, kernel = this environment (PROFILE=smoke for a quick look)
PYTHON ?= python3
# Canonical CPU kernels (glamd_core/kernels.py, docs/reproducibility.md): every process a target starts
# -- pool workers, papermill and Jupyter kernels, pytest, the paper check -- runs AVX2 kernels, so an
# AVX-512 machine trains what an AVX2-only one trains. Set here, before any torch process starts;
# a CPU without AVX2 runs its own kernels, and its runs are keyed by them.
ifeq ($(shell grep -qw avx2 /proc/cpuinfo 2>/dev/null && echo yes),yes)
export ATEN_CPU_CAPABILITY := avx2
export ONEDNN_MAX_CPU_ISA := AVX2
export MKL_CBWR := AVX2
endif
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= cpu

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e '.[notebooks,test]'
	$(VENV)/bin/python -m glamd_core.kernels kernelspec
	touch $@

.PHONY: install reproduce test paper-check bench consistency lab
install: $(VENV)/.installed

reproduce: $(VENV)/.installed
	$(PY) -m glamd_core reproduce --profile $(PROFILE)

test: $(VENV)/.installed
	$(PY) -m pytest
	$(PY) -m glamd_core.paper_check

paper-check: $(VENV)/.installed
	$(PY) -m glamd_core.paper_check

bench: $(VENV)/.installed
	$(PY) -m benchmarks

consistency: $(VENV)/.installed
	$(PY) -m glamd_core.consistency

# root (as on CI machines and containers) must say so to Jupyter
LAB_FLAGS ?= $(if $(filter 0,$(shell id -u)),--allow-root,)
lab: $(VENV)/.installed
	GLAMD_PROFILE=$(PROFILE) $(PY) -m jupyter lab --notebook-dir=notebooks $(LAB_FLAGS)

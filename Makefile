# Two commands do all set-up on a fresh machine:
#   make demo   install into .venv and run the main job
#   make test   install into .venv and run the default test suite
#   make notebook   re-execute notebooks/explore_heads.ipynb and save it with its outputs
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl

.PHONY: install test test-slow demo notebook clean

install:
	@bash scripts/install.sh

test: install
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

demo: install
	$(PY) examples/franka_finetune.py

notebook: install
	$(PY) scripts/refresh_notebook.py

clean:
	rm -rf $(VENV) .pytest_cache

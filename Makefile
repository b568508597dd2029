# Two commands do all the setup on a fresh clone:
#   make build     build ./perturbed-dsprites from the shipped reference (DATASET=shapes3d for the
#                  other), verified: the main job, minutes
#   make test      run the whole test suite
# make build-smoke runs the whole build on the smoke sub-grid in seconds; make preview renders the
# procedural dSprites grid into out/preview.png.
# Both create .venv on first use. torch==2.13.0 is pinned here because a CPU build of it is
# available offline on our machines; any torch>=2.3 works for users (see pyproject.toml).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
DATASET ?= dsprites

.PHONY: venv preview build build-smoke test lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

venv: $(VENV)/.installed

preview: venv
	$(PY) -m generation.preview --dataset dsprites --all --out out/preview.png

build: venv
	$(PY) -m generation.build --dataset $(DATASET)

build-smoke: venv
	$(PY) -m generation.build --dataset $(DATASET) --smoke

test: venv
	$(PY) -m pytest -n 2 -q

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf $(VENV) out

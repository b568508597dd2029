# Two commands do all the setup on a fresh clone:
#   make preview   render the procedural dSprites grid and write out/preview.png (the main job for now)
#   make test      run the whole test suite
# Both create .venv on first use. torch==2.13.0 is pinned here because a CPU build of it is
# available offline on our machines; any torch>=2.3 works for users (see pyproject.toml).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0

.PHONY: venv preview test lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

venv: $(VENV)/.installed

preview: venv
	$(PY) -m generation.preview --dataset dsprites --all --out out/preview.png

test: venv
	$(PY) -m pytest -n 2 -q

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf $(VENV) out

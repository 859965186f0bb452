# The two commands a user needs: `make bench` and `make test`. The Makefile builds its own
# virtualenv (.venv/) from pyproject.toml; Python 3.11 and make are all a machine needs.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: bench smoke test calibrate soak clean-venv

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found (need Python 3.11)" >&2; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

bench: $(STAMP)
	$(PY) -m bench run $(ARGS)

smoke: $(STAMP)
	$(PY) -m bench run --quick --label smoke $(ARGS)

calibrate: $(STAMP)
	$(PY) -m bench calibrate $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(ARGS)

soak: $(STAMP)
	$(PY) -m bench.soak $(ARGS)

clean-venv:
	rm -rf $(VENV)

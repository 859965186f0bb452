# The two commands a user needs: `make bench` and `make test`. The Makefile builds its own
# virtualenv (.venv/) from the committed lock servers/locks/harness.txt (pyproject.toml's
# dependencies resolved by `python -m bench envs --lock`), so two machines run the same
# versions; Python 3.11 and make are all a machine needs. uv (pinned in the lock) installs.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
LOCK   := servers/locks/harness.txt
ARGS   ?=

.PHONY: bench smoke test calibrate soak soak-driver findings clean-venv

$(STAMP): pyproject.toml $(LOCK) bench/driver/page/package-lock.json
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found (need Python 3.11)" >&2; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$$(grep -m1 '^uv==' $(LOCK))"
	$(VENV)/bin/uv pip install --quiet --python $(PY) -r $(LOCK)
	$(VENV)/bin/uv pip install --quiet --python $(PY) --no-deps -e .
	@# --client browser: socket.io-client from its committed lock (optional: needs npm)
	@if command -v npm >/dev/null; then npm ci --no-audit --no-fund --silent --prefix bench/driver/page; \
	else echo "make: npm not found: --client browser stays unavailable (apt install npm)"; fi
	touch $(STAMP)

bench: $(STAMP)
	$(PY) -m bench run $(ARGS)

smoke: $(STAMP)
	$(PY) -m bench run --quick --label smoke $(ARGS)

calibrate: $(STAMP)
	$(PY) -m bench calibrate $(ARGS)

# the README's generated findings, rewritten from their committed runs in results/reference/
findings: $(STAMP)
	$(PY) -m bench.output.readme_tables $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(ARGS)

# churn soak: clients joining and leaving at a steady rate (--variants, --duration; default
# socketio-run-gevent for 10 minutes): does the server's memory grow?
soak: $(STAMP)
	$(PY) -m bench.churn $(ARGS)

# the driver's own soak: one long open-loop step, does the driver leak?
soak-driver: $(STAMP)
	$(PY) -m bench.soak $(ARGS)

clean-venv:
	rm -rf $(VENV)

# mailbridge — the two commands of the quick start are `make demo` and `make test`.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test bench bench-smoke system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

## Run the product on its embedded default: PSA simulator + bundled samples, prints tickets.
demo: $(STAMP)
	$(VENV)/bin/mailbridge demo

## Install what the tests need (Dovecot, Chromium, systemd-analyze), then run pytest.
test: $(STAMP) system-deps
	$(VENV)/bin/pytest -q -p no:cacheprovider

system-deps:
	@sh scripts/system-deps.sh

## Benchmarks (not part of `make test`): real Dovecot + simulator on loopback.
bench: $(STAMP) system-deps
	$(PY) -m bench.run --write docs/performance.md

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache test-artifacts

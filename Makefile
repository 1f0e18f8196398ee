# mailbridge — the two commands of the quick start are `make demo` and `make test`.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
# `make demo` installs what mailbridge runs on plus what the demo itself uses (its SMTP sink):
# the [demo] extra. `make test` adds the [test] extra (pytest, playwright, hypothesis, …).
DEMO_STAMP := $(VENV)/.demo-stamp
TEST_STAMP := $(VENV)/.test-stamp

.PHONY: test-deep demo test bench bench-smoke system-deps man clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(DEMO_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[demo]'
	touch $(DEMO_STAMP)

$(TEST_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[test]'
	touch $(TEST_STAMP) $(DEMO_STAMP)

## Run the product on its embedded default: PSA simulator + bundled samples, prints tickets.
demo: $(DEMO_STAMP)
	$(VENV)/bin/mailbridge demo

## Install what the tests need (Dovecot, Chromium, systemd-analyze), then run pytest.
test: $(TEST_STAMP) system-deps
	MAILBRIDGE_NO_SYSTEM_SKIPS=1 $(VENV)/bin/pytest -q -p no:cacheprovider

## The lifecycle property tests with five times the examples (not part of `make test`).
test-deep: $(TEST_STAMP) system-deps
	LIFECYCLE_MODEL_EXAMPLES=5000 LIFECYCLE_HTTP_EXAMPLES=1000 \
		$(VENV)/bin/pytest -q -p no:cacheprovider tests/test_lifecycle_property.py

system-deps:
	@sh scripts/system-deps.sh

## The man page, regenerated from the command definitions (tests fail when it is stale).
man: $(DEMO_STAMP)
	$(PY) -m bridge.cli.manpage --write

## Benchmarks (not part of `make test`): real Dovecot + simulator on loopback.
bench: $(TEST_STAMP) system-deps
	$(PY) -m bench.run --write docs/performance.md

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache test-artifacts

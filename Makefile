# Two commands on a fresh Debian 12 machine with Python 3.11:
#   make run   - create .venv, install, start the relay with embedded defaults
#   make test  - install whatever is missing (pip into .venv, Debian packages via apt-get), run every check
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# Debian packages the test suite drives for real (installed only when absent); the CJK font
# lets headless Chromium render the Chinese pages in screenshots as school PCs do.
APT_PACKAGES := redis-server janus chromium iptables iproute2 fonts-wqy-zenhei prometheus coturn

.PHONY: run test bench fuzz scenarios lint typecheck pytest system-deps client-deps clean

# Third-party WHIP/WHEP browser libraries the client tests load (tests/clients/README.md);
# reinstalled only when the lock file changes.
CLIENTS := tests/clients
CLIENTS_STAMP := $(CLIENTS)/node_modules/.package-lock.json

$(STAMP): pyproject.toml
	@# Debian splits venv/ensurepip into python3-venv
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || $(MAKE) --no-print-directory system-deps APT_PACKAGES=python3-venv
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

run: $(STAMP)
	$(BIN)/ketang serve

# The benchmark against Janus on this machine; pass options with BENCH_ARGS="--classrooms 10,50".
bench: $(STAMP) system-deps
	$(BIN)/ketang bench --peer janus $(BENCH_ARGS)

$(CLIENTS_STAMP): $(CLIENTS)/package-lock.json
	npm ci --prefix $(CLIENTS) --no-audit --no-fund --loglevel=error
	touch $@

client-deps: $(CLIENTS_STAMP)

# The signalling fuzz test with thousands of cases (make test runs a few hundred).
fuzz: $(STAMP)
	KETANG_FUZZ_CASES=3000 $(BIN)/pytest -q -s tests/test_fuzz.py

# Rural link scenarios for the adaptive bitrate (tests/e2e/test_scenarios.py): a minute or
# more each, reports in test-artifacts/scenarios/; KETANG_SCENARIO_RUNS=10 repeats each.
scenarios: $(STAMP) system-deps
	KETANG_SCENARIOS=1 $(BIN)/pytest -q -s tests/e2e/test_scenarios.py

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "need root to apt-get install:$$missing" >&2; exit 1; fi; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check relay recorder monitoring tests
	$(BIN)/ruff format --check relay recorder monitoring tests

typecheck: $(STAMP)
	$(BIN)/mypy

# pytest exits 5 when it collected nothing: that is a broken suite, not a pass.
pytest: $(STAMP) system-deps client-deps
	@$(BIN)/pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; \
	exit $$rc

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

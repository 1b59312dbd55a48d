# Two commands on a fresh machine:  `make demo`  and  `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.deps-stamp
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup demo test test-unit test-js test-browser test-notebooks test-binder test-floors lint format bench js clean system-deps

setup: system-deps $(STAMP) js
	$(PIP) install -q --no-deps --no-build-isolation -e .

# Debian packages: Chromium for browser tests, Graphviz `dot` for static export.
system-deps:
	@if ! command -v chromium >/dev/null || ! command -v dot >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium graphviz >/dev/null; \
	  else echo "Please install chromium and graphviz (e.g. sudo apt-get install chromium graphviz)"; fi; \
	fi

$(STAMP): requirements-dev.txt constraints.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q -U pip
	$(PIP) install -q -r requirements-dev.txt -c constraints.txt
	touch $(STAMP)

js/node_modules/.stamp: js/package.json js/package-lock.json
	cd js && npm ci --no-audit --no-fund --loglevel=error
	touch $@

js: js/node_modules/.stamp
	cd js && npm run --silent build

# Jupyter refuses to run as root without --allow-root (containers, CI machines).
demo: setup
	$(VENV)/bin/jupyter lab notebooks/00-quickstart.ipynb $$([ "$$(id -u)" = 0 ] && echo --allow-root)

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format:
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test-unit:
	$(PY) -m pytest -q tests -m "not browser" -p no:cacheprovider

# The front-end's own tests (node --test, no browser): the stats decoder against the blob
# tests/test_stats_wire.py pins, and the number formats.
test-js: js/node_modules/.stamp
	cd js && node --test test/

test-browser:
	$(PY) -m pytest -q tests -m browser -p no:cacheprovider

test-notebooks:
	$(PY) -m pytest -q -p no:cacheprovider --nbval --nbval-current-env \
	  --nbval-sanitize-with notebooks/sanitize.cfg notebooks

# The Binder recipe (binder/) in a fresh venv from a clean clone of the committed tree, then the
# notebooks under nbval in that venv (no Docker here). About 2 minutes; part of `make test`.
test-binder: $(STAMP)
	bash binder/test-recipe.sh $(CURDIR)/$(PY)

# The lowest anywidget and ipywidgets pyproject.toml declares (and the ipywidgets front-end
# packages that floor allows) in a fresh venv reusing this venv's other packages: the widget's
# unit tests and one JupyterLab test against them (tests/floors.py). About a minute.
test-floors: $(STAMP)
	$(PY) tests/floors.py /tmp/gradwidget-floors

test: setup lint
	$(MAKE) --no-print-directory test-js
	$(PY) -m pytest -p no:cacheprovider tests
	$(MAKE) --no-print-directory test-notebooks
	$(MAKE) --no-print-directory test-binder
	$(MAKE) --no-print-directory test-floors

bench: setup
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) js/node_modules gradwidget/static build dist

# Every target creates the virtualenv it needs and installs everything itself.
PYTHON ?= python3
VENV ?= .venv
# Django 6 needs Python 3.12+: a second virtualenv runs the suite there too.
PYTHON6 ?= $(shell scripts/find-python 3.12)
VENV6 ?= .venv-django6
PORT ?= 8000
# e.g. make demo DEMO_ARGS='--duration 60 --workers 4'
DEMO_ARGS ?=

.PHONY: test venvs checks suites suite-django5 suite-django5-benchmarks suite-django5-servers suite-django5-hardening suite-django5-rest suite-django6 suite-django6-servers test-django6 lint dist docs django-suite django-suite-django6 demo bench bench-instructions clean

# The tools live in pyproject.toml's [dependency-groups]: `pip install --group` needs pip 25.1+.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade 'pip>=25.1'
	$(VENV)/bin/python -m pip install -q -e '.[otel]' 'Django>=5.2,<6' \
		--group test --group lint --group docs --group bench --group matrix
	touch $@

$(VENV6)/.installed: pyproject.toml
	$(PYTHON6) -m venv $(VENV6)
	$(VENV6)/bin/python -m pip install -q --upgrade 'pip>=25.1'
	$(VENV6)/bin/python -m pip install -q -e '.[otel]' 'Django>=6,<7' --group test
	touch $@

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

venvs: $(VENV)/.installed $(VENV6)/.installed

# The whole suite on Django 5.2; on Django 6 (Python 3.12+) the in-process suite and the
# ASGI servers' outcome and disconnect matrices (Django's ASGI handler is what changes between
# versions). Each stage runs its parts side by side; any part failing fails `make test`.
test:
	$(MAKE) -j2 --output-sync=target venvs
	bash scripts/install-system-deps
	$(MAKE) -j3 --output-sync=target checks
	$(MAKE) suites

# Lint, the packages and the docs site: independent, so side by side.
checks: lint dist docs

# The test lanes, side by side (each output is printed whole when it ends), in two waves
# sized for two cores. First the lanes that mostly wait on real servers and clients, next to
# the benchmarks' smoke tests (callgrind: one core, and they must keep it); then the lanes
# that keep the cores busy in-process (memory probes, hypothesis). The Django 5.2 suite is
# split by path, so a module (its shared server, its ``last_in_module`` tests) always runs
# whole in one lane. A failing lane fails `make test`.
suites:
	$(MAKE) -j3 --output-sync=target suite-django5-benchmarks suite-django5-servers \
		suite-django5-rest suite-django6-servers django-suite
	$(MAKE) -j2 --output-sync=target suite-django5-hardening suite-django6

SUITE5 = SENT_OTEL_DIST=dist $(VENV)/bin/python -m pytest
# The Django 5.2 suite's lanes, by path: the benchmarks' smoke tests, the real-server
# matrices, the hardening tests; suite-django5-rest runs everything else.
LANE_BENCHMARKS = tests/test_benchmarks_smoke.py
LANE_SERVERS = tests/servers
LANE_HARDENING = tests/hardening

# The whole Django 5.2 suite in one run (what its lanes run between them).
suite-django5: $(VENV)/.installed
	$(SUITE5)

suite-django5-benchmarks: $(VENV)/.installed
	$(SUITE5) $(LANE_BENCHMARKS)

suite-django5-servers: $(VENV)/.installed
	$(SUITE5) $(LANE_SERVERS)

suite-django5-hardening: $(VENV)/.installed
	$(SUITE5) $(LANE_HARDENING)

suite-django5-rest: $(VENV)/.installed
	$(SUITE5) $(addprefix --ignore=,$(LANE_BENCHMARKS) $(LANE_SERVERS) $(LANE_HARDENING))

# Django 6: the in-process suite, and the ASGI servers' outcome and disconnect matrices.
suite-django6: $(VENV6)/.installed
	$(VENV6)/bin/python -m pytest -m "not servers and not packaging"

suite-django6-servers: $(VENV6)/.installed
	$(VENV6)/bin/python -m pytest tests/servers/test_outcomes.py -k "uvicorn or hypercorn or daphne or granian-asgi"
	$(VENV6)/bin/python -m pytest tests/servers/test_seen.py -k "uvicorn or hypercorn or daphne or granian-asgi"

# sdist and wheel (the wheel built from the sdist, so the sdist is known to rebuild), checked
# as PyPI would; tests/test_packaging.py installs this wheel when SENT_OTEL_DIST names dist/.
dist: $(VENV)/.installed
	rm -rf dist
	$(VENV)/bin/python -m build --outdir dist .
	$(VENV)/bin/twine check --strict dist/*

# The documentation site, warnings as errors: docs/_build/html/index.html.
docs: $(VENV)/.installed
	rm -rf docs/_build
	$(VENV)/bin/sphinx-build -W --keep-going -q -b html docs docs/_build/html

# Django's own request-handling tests without and with the plugin: no failure may be new.
django-suite: $(VENV)/.installed
	$(VENV)/bin/python scripts/django_suite.py

django-suite-django6: $(VENV6)/.installed
	$(VENV6)/bin/python scripts/django_suite.py

# The whole suite on Django 6 as well.
test-django6: $(VENV6)/.installed
	bash scripts/install-system-deps
	$(VENV6)/bin/python -m pytest

demo: $(VENV)/.installed
	$(VENV)/bin/python -m example.demo --port $(PORT) $(DEMO_ARGS)

bench: $(VENV)/.installed
	bash scripts/install-system-deps
	$(VENV)/bin/python -m benchmarks

# Instructions per request under callgrind: repeatable on a busy machine (needs valgrind).
bench-instructions: $(VENV)/.installed
	$(VENV)/bin/python -m benchmarks.instructions

clean:
	rm -rf $(VENV) $(VENV6) build dist docs/_build *.egg-info src/*.egg-info

# Every target creates the virtualenv it needs and installs everything itself.
PYTHON ?= python3
VENV ?= .venv
# Django 6 needs Python 3.12+: a second virtualenv runs the suite there too.
PYTHON6 ?= $(shell scripts/find-python 3.12)
VENV6 ?= .venv-django6
PORT ?= 8000
# e.g. make demo DEMO_ARGS='--duration 60 --workers 4'
DEMO_ARGS ?=

.PHONY: test test-django6 lint django-suite django-suite-django6 demo bench bench-instructions clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[otel,test,bench]' 'Django>=5.2,<6'
	touch $@

$(VENV6)/.installed: pyproject.toml
	$(PYTHON6) -m venv $(VENV6)
	$(VENV6)/bin/python -m pip install -q --upgrade pip
	$(VENV6)/bin/python -m pip install -q -e '.[otel,test]' 'Django>=6,<7'
	touch $@

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The whole suite on Django 5.2; on Django 6 (Python 3.12+) the in-process suite and the
# ASGI servers' outcome and disconnect matrices (Django's ASGI handler is what changes between
# versions).
test: $(VENV)/.installed $(VENV6)/.installed
	bash scripts/install-system-deps
	$(MAKE) lint
	$(VENV)/bin/python -m pytest
	$(VENV6)/bin/python -m pytest -m "not servers"
	$(VENV6)/bin/python -m pytest tests/servers/test_outcomes.py -k "uvicorn or hypercorn or daphne or granian-asgi"
	$(VENV6)/bin/python -m pytest tests/servers/test_seen.py -k "uvicorn or hypercorn or daphne or granian-asgi"
	$(MAKE) django-suite

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
	rm -rf $(VENV) $(VENV6) build dist *.egg-info

# Tollgate: `make demo` and `make test` are all a new user needs (README).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast test-browser lint bench soak venv clean

# The virtualenv is rebuilt whenever pyproject.toml is newer than the last install.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# The demo is a development server: DEBUG on (settings refuse the published dev secret key
# without it; production is the default, docs/security.md).
demo: $(STAMP)
	DEBUG=true $(PY) manage.py migrate --noinput
	DEBUG=true TOLLGATE_WEBHOOKS_ALLOW_PRIVATE=true $(PY) manage.py seed_demo --serve --history 5

# Everything but the browser tests on two processes (the machine's two cores; `loadfile` keeps a
# file's tests in one process, so tests that share a Redis database or a Celery queue never run
# at once), then the browser tests in their own invocation (their sync Playwright event loop
# needs DJANGO_ALLOW_ASYNC_UNSAFE, which must not hide bugs elsewhere).
test: $(STAMP)
	$(VENV)/bin/pytest -m "not browser" -n 2 --dist loadfile $(PYTEST_ARGS)
	DJANGO_ALLOW_ASYNC_UNSAFE=true $(VENV)/bin/pytest -m browser $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(VENV)/bin/pytest -m "not browser and not slow" -x $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy .

bench: $(STAMP)
	DEBUG=$${DEBUG:-true} $(PY) -m bench $(BENCH_ARGS)

# The fault soak (docs/reliability.md): minutes, on loopback, with its own PostgreSQL cluster,
# Redis, gunicorn and Celery worker. SOAK_ARGS, e.g. --duration 1800.
soak: $(STAMP)
	$(PY) -m bench.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache

"""Settings of the test suite and of mypy's Django plugin: the production settings, loaded with
DEBUG turned on as `make demo` does, so that the development secret key is allowed. pytest-django
still runs every test with DEBUG off, and the processes tests start (manage.py, Celery workers)
inherit DEBUG=true from this process's environment. tests/config/test_production_settings.py
loads `config.settings` without it, as production does."""

import os

os.environ.setdefault("DEBUG", "true")

from config.settings import *  # noqa: F403

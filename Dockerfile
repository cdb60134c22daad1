# Two images from one file. The default target, `app`, is the production image: gunicorn for the
# web (its CMD), the same image for the Celery worker and beat (docker-compose.yml, Procfile).
# `localstripe` is the local Stripe-compatible server of docker-compose.yml. Everything is
# installed here, at build time: no container installs anything when it starts
# (tests/ops/test_container.py checks both).

FROM python:3.11-slim AS localstripe
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN pip install localstripe==1.15.10
EXPOSE 8420
CMD ["localstripe", "--port", "8420"]

FROM python:3.11-slim AS app
# JSON log lines and a metrics directory shared by the container's processes (docs/operations.md).
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    LOG_FORMAT=json PROMETHEUS_MULTIPROC_DIR=/tmp/tollgate-metrics
WORKDIR /app

COPY pyproject.toml README.md ./
RUN pip install --upgrade pip && pip install .
COPY . .
# Bytecode now, once: with PYTHONDONTWRITEBYTECODE no process writes it, and each one (every
# run_billing, worker and web process) would otherwise compile the project's modules at start.
RUN python -m compileall -q .
# collectstatic needs settings, not secrets: DEBUG=true for this build step only.
RUN DATABASE_URL=postgres://unused/unused DEBUG=true python manage.py collectstatic --noinput
RUN useradd --system --no-create-home tollgate && install -d -o tollgate /tmp/tollgate-metrics
USER tollgate

EXPOSE 8000
# Settings in config/gunicorn.py (docs/operations.md, "Gunicorn").
CMD ["gunicorn", "config.wsgi:application", "--config", "python:config.gunicorn"]

"""The Celery app. Broker from CELERY_BROKER_URL; unset, tasks run eagerly in-process."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("tollgate")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Deemed acceptance's task lives beside its service (billing/deeming.py), not in billing/tasks.py,
# which the approval it calls imports.
app.autodiscover_tasks(related_name="deeming")

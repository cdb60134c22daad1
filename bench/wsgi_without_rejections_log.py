"""The app without the rejections log, for `python -m bench ingest_rejections` only: both ingest
views' `post` unwrapped from `usage.rejections.rejections_logged`, so no request pays anything
for the log (the "log skipped" build the bench compares the real app with). Never served
otherwise."""

from config.wsgi import application
from usage.api import UsageApi
from usage.events_api import EventsApi

UsageApi.post = UsageApi.post.__wrapped__  # type: ignore[attr-defined,method-assign]
EventsApi.post = EventsApi.post.__wrapped__  # type: ignore[attr-defined,method-assign]

__all__ = ["application"]

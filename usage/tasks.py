"""Celery tasks of usage: thin wrappers over services."""

from __future__ import annotations

from celery import shared_task

from usage.rejections import rejections_purge
from usage.services import usage_partitions_ensure


@shared_task
def ensure_usage_partitions(ahead: int = 3) -> list[str]:
    """Create the usage partitions of this month and the next `ahead` months (daily, from beat),
    so no insert waits for DDL. Returns the names created."""
    return usage_partitions_ensure(ahead=ahead)


@shared_task
def purge_usage_rejections() -> int:
    """Delete rejection log rows older than 30 days (daily, from beat). Returns how many."""
    return rejections_purge()

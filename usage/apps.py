from django.apps import AppConfig


class UsageConfig(AppConfig):
    """Metered usage records: the append-only input of billing (`docs/ingestion.md`)."""

    name = "usage"
    label = "usage"
    verbose_name = "Usage"

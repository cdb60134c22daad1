from django.apps import AppConfig


class UsageConfig(AppConfig):
    """Metered usage records: the append-only input of billing. An app of its own inside
    `ledger/` so that its partitioned table has its own migrations."""

    name = "ledger.usage"
    label = "usage"
    verbose_name = "Usage"

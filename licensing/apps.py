from django.apps import AppConfig


class LicensingConfig(AppConfig):
    name = "licensing"
    verbose_name = "Licensing catalog"
    # The OpenAPI auth scheme (licensing/schema.py) registers when licensing/api.py imports it,
    # i.e. with the URLconf that any schema generation reads: not at start-up, where it would
    # import drf-spectacular for every command (docs/performance.md).

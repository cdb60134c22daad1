from django.apps import AppConfig


class LicensingConfig(AppConfig):
    name = "licensing"
    verbose_name = "Licensing catalog"

    def ready(self) -> None:
        from licensing import schema  # noqa: F401  (registers the OpenAPI auth scheme)

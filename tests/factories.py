"""factory_boy factories for the catalog. Other apps add theirs beside these."""

from __future__ import annotations

from datetime import UTC, datetime

import factory

from licensing.models import (
    Agreement,
    Host,
    License,
    LicensedModel,
    LicenseVersion,
    Licensor,
    ModelAlias,
)


class LicensorFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Licensor
        django_get_or_create = ("slug",)

    slug = factory.Sequence(lambda n: f"licensor-{n}")
    name = factory.LazyAttribute(lambda o: o.slug.title())
    email = factory.LazyAttribute(lambda o: f"billing@{o.slug}.example")


class HostFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Host
        django_get_or_create = ("slug",)

    slug = factory.Sequence(lambda n: f"host-{n}")
    name = factory.LazyAttribute(lambda o: o.slug.title())
    currency = "USD"


class LicenseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = License
        django_get_or_create = ("slug",)

    slug = factory.Sequence(lambda n: f"license-{n}")
    licensor = factory.SubFactory(LicensorFactory)
    name = factory.LazyAttribute(lambda o: f"{o.slug} license")


class LicenseVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = LicenseVersion

    license = factory.SubFactory(LicenseFactory)
    label = factory.Sequence(lambda n: f"v{n}")
    effective_from = datetime(2026, 1, 1, tzinfo=UTC)
    currency = "USD"
    rules = factory.LazyFunction(
        lambda: [
            {
                "match": {"customer_category": ["commercial"]},
                "charge": {"type": "revenue_share", "percent": "12"},
            },
            {"charge": {"type": "free"}},
        ]
    )
    minimum_per_month = None
    cap_per_month = None
    attribution = ""


class AgreementFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Agreement

    host = factory.SubFactory(HostFactory)
    license = factory.SubFactory(LicenseFactory)
    label = factory.Sequence(lambda n: f"agreement-{n}")
    effective_from = datetime(2026, 1, 1, tzinfo=UTC)
    currency = "USD"
    rules = factory.LazyFunction(
        lambda: [
            {
                "match": {"customer_category": ["commercial"]},
                "charge": {"type": "revenue_share", "percent": "12"},
            }
        ]
    )


class LicensedModelFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = LicensedModel
        django_get_or_create = ("slug",)

    slug = factory.Sequence(lambda n: f"model-{n}")
    name = factory.LazyAttribute(lambda o: o.slug)
    license = factory.SubFactory(LicenseFactory)
    licensor = factory.LazyAttribute(lambda o: o.license.licensor)


class ModelAliasFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ModelAlias

    model = factory.SubFactory(LicensedModelFactory)
    alias = factory.Sequence(lambda n: f"org/model-{n}")

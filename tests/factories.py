"""factory_boy factories, and the registry the tenant-isolation test uses to create an object of
another organization for any tenant-scoped model. A new tenant model needs a factory here."""

from __future__ import annotations

from typing import Any

import factory
from django.db import models

from aggregator.tenancy.models import ApiKey, Issuer, Membership, Organization, Role, User


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("email",)

    email = factory.Sequence(lambda n: f"user{n}@example.test")
    full_name = factory.Faker("name")
    password = factory.django.Password("correct horse battery staple")


class IssuerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Issuer

    name = factory.Sequence(lambda n: f"Issuer {n}")
    country = "US"


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization

    slug = factory.Sequence(lambda n: f"org-{n}")
    name = factory.Sequence(lambda n: f"Organization {n}")
    currency = "USD"


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    organization = factory.SubFactory(OrganizationFactory)
    user = factory.SubFactory(UserFactory)
    role = Role.OWNER


class ApiKeyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ApiKey

    organization = factory.SubFactory(OrganizationFactory)
    name = "factory key"
    prefix = factory.Sequence(lambda n: f"p{n:011d}")
    hashed_key = "0" * 64


TENANT_FACTORIES: dict[type[models.Model], Any] = {
    Membership: MembershipFactory,
    ApiKey: ApiKeyFactory,
}


def create_for_organization(model: type[models.Model], organization: Organization) -> models.Model:
    """An instance of ``model`` belonging to ``organization``, via the registered factory."""
    if model is Organization:
        return organization
    try:
        factory_cls = TENANT_FACTORIES[model]
    except KeyError:
        raise LookupError(
            f"No factory for tenant model {model.__name__}: add one to tests/factories.py TENANT_FACTORIES."
        ) from None
    return factory_cls(organization=organization)  # type: ignore[no-any-return]

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from aggregator.tenancy.models import Organization, Role, User
from aggregator.tenancy.services import api_key_create
from tests.factories import MembershipFactory, OrganizationFactory, UserFactory

# The browser tests' screenshot folder and the report line naming it (run by the controlling process).
pytest_plugins = ["tests.e2e.plugin"]


@pytest.fixture
def organization(db: Any) -> Organization:
    return OrganizationFactory(slug="acme", name="Acme Corp", currency="USD")


@pytest.fixture
def other_organization(db: Any) -> Organization:
    return OrganizationFactory(slug="globex", name="Globex", currency="EUR")


@pytest.fixture
def owner(organization: Organization) -> User:
    return MembershipFactory(organization=organization, role=Role.OWNER, user__email="owner@acme.test").user


@pytest.fixture
def viewer(organization: Organization) -> User:
    return MembershipFactory(organization=organization, role=Role.VIEWER, user__email="viewer@acme.test").user


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def owner_client(owner: User) -> APIClient:
    client = APIClient()
    client.force_login(owner)
    return client


@pytest.fixture
def key_client(organization: Organization) -> APIClient:
    _key, raw = api_key_create(organization=organization, name="tests")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


@pytest.fixture
def make_user() -> Any:
    return UserFactory

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from aggregator.tenancy.models import User
from aggregator.tenancy.staff import FINANCE, SUPPORT, staff_roles_setup
from tests.factories import UserFactory


@pytest.fixture
def roles(db: Any) -> None:
    staff_roles_setup()


def _client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _staff(role: str, email: str) -> User:
    user = UserFactory(email=email, is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def superuser(db: Any) -> User:
    return UserFactory(email="root@operator.test", is_staff=True, is_superuser=True)


@pytest.fixture
def finance(roles: None) -> User:
    return _staff(FINANCE, "finance@operator.test")


@pytest.fixture
def support(roles: None) -> User:
    return _staff(SUPPORT, "support@operator.test")


@pytest.fixture
def root_client(superuser: User) -> Client:
    return _client_for(superuser)


@pytest.fixture
def finance_client(finance: User) -> Client:
    return _client_for(finance)


@pytest.fixture
def support_client(support: User) -> Client:
    return _client_for(support)

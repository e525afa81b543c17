"""Portal payment methods with the test gateway: default and fallback, removal, roles, scoping,
and a fixed number of queries for the list."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from aggregator.tenancy.models import Organization, User
from billing.payments.models import PaymentMethod
from tests.factories import PaymentMethodFactory


@pytest.fixture
def portal(owner: User) -> Client:
    client = Client()
    client.force_login(owner)
    return client


@pytest.fixture
def cards(organization: Organization) -> tuple[PaymentMethod, PaymentMethod, PaymentMethod]:
    default = PaymentMethodFactory(organization=organization, last4="4242", is_default=True)
    fallback = PaymentMethodFactory(organization=organization, brand="mastercard", last4="4444", is_fallback=True)
    other = PaymentMethodFactory(organization=organization, brand="amex", last4="0005", exp_month=1, exp_year=2031)
    return default, fallback, other


def flags(*methods: PaymentMethod) -> list[tuple[bool, bool]]:
    return [PaymentMethod.objects.filter(pk=m.pk).values_list("is_default", "is_fallback").get() for m in methods]


def test_the_list_shows_each_method_with_its_role(portal: Client, cards: Any) -> None:
    default, fallback, other = cards
    html = portal.get("/payment-methods/").content.decode()
    assert html.index("Visa •••• 4242") < html.index("Mastercard •••• 4444") < html.index("Amex •••• 0005")
    assert "expires 01/2031" in html
    assert 'class="badge pm-default"' in html and 'class="badge pm-fallback"' in html
    assert f'id="make-default-{default.pk}"' not in html and f'id="make-default-{fallback.pk}"' in html
    assert f'id="make-fallback-{fallback.pk}"' not in html and f'id="make-fallback-{other.pk}"' in html
    assert 'id="setup-card-element"' not in html  # no publishable key configured: no card form
    assert "Saving cards is not available right now." in html


def test_the_list_reads_the_same_number_of_queries_for_few_and_many_methods(
    portal: Client, organization: Organization
) -> None:
    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert portal.get("/payment-methods/").status_code == 200
        return len(queries)

    PaymentMethodFactory(organization=organization, is_default=True)
    few = count()
    for _ in range(12):
        PaymentMethodFactory(organization=organization)
    assert count() == few


def test_another_method_becomes_the_fallback_and_the_fallback_the_default(portal: Client, cards: Any) -> None:
    default, fallback, other = cards
    assert portal.post(f"/payment-methods/{other.pk}/fallback/").status_code == 302
    assert flags(default, fallback, other) == [(True, False), (False, False), (False, True)]
    portal.post(f"/payment-methods/{other.pk}/default/")
    assert flags(default, fallback, other) == [(False, False), (False, False), (True, False)]


def test_removing_the_default_makes_the_fallback_the_default(portal: Client, cards: Any) -> None:
    default, fallback, other = cards
    response = portal.post(f"/payment-methods/{default.pk}/remove/", follow=True)
    assert "Visa •••• 4242 is removed." in response.content.decode()
    assert not PaymentMethod.objects.filter(pk=default.pk).exists()
    assert flags(fallback, other) == [(True, False), (False, False)]


def test_the_api_can_make_the_fallback_the_default(owner_client: APIClient, cards: Any) -> None:
    default, fallback, _other = cards
    response = owner_client.patch(f"/api/v1/payment-methods/{fallback.pk}/", {"is_default": True}, format="json")
    assert response.status_code == 200, response.json()
    assert flags(default, fallback) == [(False, False), (True, False)]


def test_another_organizations_method_is_a_404(portal: Client, other_organization: Organization) -> None:
    theirs = PaymentMethodFactory(organization=other_organization, is_default=True)
    for action in ("default", "fallback", "remove"):
        assert portal.post(f"/payment-methods/{theirs.pk}/{action}/").status_code == 404
    assert flags(theirs) == [(True, False)]
    assert "4242" not in portal.get("/payment-methods/").content.decode()


def test_a_viewer_cannot_change_methods(viewer: User, cards: Any) -> None:
    default, fallback, other = cards
    client = Client()
    client.force_login(viewer)
    html = client.get("/payment-methods/").content.decode()
    assert "Visa •••• 4242" in html and "<form" not in html.split('id="payment-methods"')[1].split("</section>")[0]
    for action in ("default", "fallback", "remove"):
        assert client.post(f"/payment-methods/{other.pk}/{action}/").status_code == 403
    assert flags(default, fallback, other) == [(True, False), (False, True), (False, False)]

"""Every portal page reads in a fixed number of queries: ten vendor accounts with one week of
history cost exactly as many queries as ten with a year of it (a year: twelve monthly invoices with
their lines and payments, a hundred and twenty credit purchases, twelve saved cards)."""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from aggregator.tenancy.models import Organization, Role
from billing.invoicing.models import Invoice
from billing.ledger.models import CreditPurchase
from billing.payments.models import PaymentMethod
from billing.payments.records import Payment
from billing.topups.models import TopUpRule
from tests.factories import (
    InvoiceFactory,
    MembershipFactory,
    OrganizationFactory,
    TopUpRuleFactory,
    VendorAccountFactory,
)
from tests.portal.conftest import build_history, signed_in

PAGES = [
    "/",
    "/vendor-accounts/",
    "/vendor-accounts/link/",
    "/vendor-accounts/link/?vendor=azure_openai",
    "/vendor-accounts/{account}/",
    "/credits/",
    "/credits/?account={account}",
    "/credits/top-up-rules/new/",
    "/credits/top-up-rules/{rule}/",
    "/usage/",
    "/usage/?start=2000-01-01&group_by=model",
    "/usage/costs.csv?start=2000-01-01",
    "/usage/focus.csv?start=2000-01-01",
    "/invoices/",
    "/invoices/{invoice}/",
    "/invoices/{invoice}/pay/",
    "/payment-methods/",
    "/team/",
    "/billing-profile/",
    "/security/",
]


def _queries(client: Client, path: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(path)
        if response.streaming:
            b"".join(response.streaming_content)
    assert response.status_code == 200, path
    return len(captured)


def test_a_year_of_history_costs_no_more_queries_than_a_week(db: Any) -> None:
    counts: dict[int, dict[str, int]] = {}
    for days in (7, 365):
        organization = OrganizationFactory(slug=f"history-{days}")
        owner = MembershipFactory(organization=organization, role=Role.OWNER).user
        accounts = build_history(organization, days=days)
        rule = TopUpRule.objects.filter(organization=organization).order_by("pk").first()
        assert rule is not None
        invoice = Invoice.objects.filter(organization=organization).order_by("-period_start").first()
        assert invoice is not None and invoice.lines.count() == 3 * len(accounts)
        months = 1 if days == 7 else 12
        assert (
            Invoice.objects.filter(organization=organization).count(),
            Payment.objects.filter(organization=organization).count(),
            CreditPurchase.objects.filter(organization=organization).count(),
            PaymentMethod.objects.filter(organization=organization).count(),
        ) == (months, 2 * months, 10 * months, months + 10)  # and the top-up rules' cards
        ids = {"account": accounts[0].pk, "rule": rule.pk, "invoice": invoice.pk}
        client = signed_in(owner)
        client.get("/")  # warm the session and content-type caches
        counts[days] = {path: _queries(client, path.format(**ids)) for path in PAGES}
    assert counts[365] == counts[7]


def test_every_page_renders_in_japanese(organization: Organization, owner: Any) -> None:
    account = VendorAccountFactory(organization=organization)
    rule = TopUpRuleFactory(organization=organization, vendor_account=account)
    invoice = InvoiceFactory(organization=organization)
    client = signed_in(owner)
    client.post("/i18n/setlang/", {"language": "ja", "next": "/"})
    for path in PAGES:
        response = client.get(path.format(account=account.pk, rule=rule.pk, invoice=invoice.pk))
        assert response.status_code == 200, path
        if not response.streaming:
            assert '<html lang="ja">' in response.content.decode(), path

"""The operator dashboard: spend under management, receivables, overdue invoices, failing syncs and
failed top-ups, exact per currency, in a fixed number of queries."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from aggregator.system.admin_dashboard import CurrencyTotal, operator_figures
from billing.invoicing.models import Invoice
from billing.topups.models import TopUp
from providers.models import VendorAccount
from tests.factories import CostRecordFactory, InvoiceFactory, OrganizationFactory, TopUpFactory, VendorAccountFactory

TODAY = date(2026, 11, 15)


def at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 6, tzinfo=UTC)


@pytest.fixture
def books(db: Any) -> dict[str, Any]:
    acme = OrganizationFactory(slug="acme", name="Acme", currency="USD")
    globex = OrganizationFactory(slug="globex", name="Globex", currency="EUR")
    openai = VendorAccountFactory(organization=acme, label="OpenAI")
    deepseek = VendorAccountFactory(
        organization=globex,
        label="DeepSeek",
        vendor="deepseek",
        failure_streak=3,
        status=VendorAccount.Status.CREDENTIALS_REJECTED,
    )
    VendorAccountFactory(organization=acme, label="Old", failure_streak=9, status=VendorAccount.Status.DISABLED)
    VendorAccountFactory(organization=acme, label="Flaky", failure_streak=1)
    for day, cost, currency, account in [
        (date(2026, 11, 1), "1.25", "USD", openai),
        (date(2026, 11, 15), "2.0000005", "USD", openai),
        (date(2026, 11, 3), "3.10", "EUR", deepseek),
        (date(2026, 10, 31), "5.00", "USD", openai),
        (date(2026, 10, 1), "0.75", "USD", openai),
        (date(2026, 9, 30), "100.00", "USD", openai),  # two months ago: not shown
        (date(2026, 11, 16), "7.00", "USD", openai),  # after "today": not yet
    ]:
        CostRecordFactory(
            vendor_account=account,
            charge_period_start=at(day),
            charge_period_end=at(day) + timedelta(1),
            billed_cost=Decimal(cost),
            billing_currency=currency,
        )
    # The balance of an invoice: amount due less credit notes and net payments (paid less refunded).
    for org, status, due, amount_due, credited, paid, refunded, currency, start in [
        (acme, Invoice.Status.OPEN, date(2026, 11, 20), "10.00", "0", "0", "0", "USD", date(2026, 10, 1)),
        (
            acme,
            Invoice.Status.PARTIALLY_PAID,
            date(2026, 11, 1),
            "20.00",
            "2.00",
            "6.00",
            "1.00",
            "USD",
            date(2026, 9, 1),
        ),
        (globex, Invoice.Status.OPEN, date(2026, 11, 14), "7.50", "0", "0", "0", "EUR", date(2026, 10, 1)),
        (globex, Invoice.Status.PAID, date(2026, 10, 1), "99.00", "0", "99.00", "0", "EUR", date(2026, 8, 1)),
        (globex, Invoice.Status.VOID, date(2026, 10, 1), "55.00", "0", "0", "0", "EUR", date(2026, 7, 1)),
        (acme, Invoice.Status.DRAFT, None, "33.00", "0", "0", "0", "USD", date(2026, 11, 1)),
    ]:
        InvoiceFactory(
            organization=org,
            status=status,
            due_date=due,
            amount_due=Decimal(amount_due),
            amount_credited=Decimal(credited),
            amount_paid=Decimal(paid),
            amount_refunded=Decimal(refunded),
            currency=currency,
            period_start=start,
            period_end=start + timedelta(days=27),
        )
    for status, created in [
        (TopUp.Status.FAILED, at(date(2026, 11, 14))),
        (TopUp.Status.FAILED, at(date(2026, 10, 20))),
        (TopUp.Status.FAILED, at(date(2026, 10, 1))),  # 45 days before: outside the window
        (TopUp.Status.SUCCEEDED, at(date(2026, 11, 14))),
    ]:
        TopUpFactory(organization=acme, rule__vendor_account=openai, status=status, created_at=created)
    return {"acme": acme, "globex": globex}


def test_the_figures_are_exact_per_currency(books: dict[str, Any]) -> None:
    figures = operator_figures(today=TODAY)
    assert (figures.month_start, figures.last_month_start) == (date(2026, 11, 1), date(2026, 10, 1))
    assert figures.spend_month_to_date == [
        CurrencyTotal("EUR", Decimal("3.10"), 1),
        CurrencyTotal("USD", Decimal("3.2500005"), 2),
    ]
    assert figures.spend_last_month == [CurrencyTotal("USD", Decimal("5.75"), 2)]
    assert figures.receivables == [CurrencyTotal("EUR", Decimal("7.50"), 1), CurrencyTotal("USD", Decimal("23.00"), 2)]
    assert figures.overdue == [CurrencyTotal("EUR", Decimal("7.50"), 1), CurrencyTotal("USD", Decimal("13.00"), 1)]
    assert figures.failing_accounts_count == 2
    assert [a.label for a in figures.failing_accounts] == ["DeepSeek", "Flaky"]
    assert figures.failed_top_ups_count == 2
    assert [t.created_at.date() for t in figures.failed_top_ups] == [date(2026, 11, 14), date(2026, 10, 20)]


def test_the_figures_cost_a_fixed_number_of_queries(books: dict[str, Any], django_assert_max_num_queries: Any) -> None:
    for org in (books["acme"], books["globex"]):
        for n in range(5):
            VendorAccountFactory(organization=org, label=f"More {n}", failure_streak=n + 1)
    with django_assert_max_num_queries(8):
        operator_figures(today=TODAY)


def test_the_dashboard_page_shows_the_figures(books: dict[str, Any], finance_client: Client) -> None:
    today = timezone.now().date()
    CostRecordFactory(
        vendor_account=VendorAccount.objects.get(label="OpenAI"),
        charge_period_start=at(today),
        charge_period_end=at(today) + timedelta(days=1),
        billed_cost=Decimal("1234.5"),
        billing_currency="JPY",
        source_key="today",
    )
    response = finance_client.get("/admin/dashboard/")
    assert response.status_code == 200
    page = response.content.decode()
    assert '<div data-currency="JPY" class="spend-mtd">1,235 JPY</div>' in page
    assert "23.00 USD" in page and "7.50 EUR" in page
    assert "DeepSeek" in page and "Flaky" in page and "Old" not in page
    assert "Failing syncs: 2 accounts" in page

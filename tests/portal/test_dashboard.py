"""The dashboard's per-vendor cards: balance, runway and depletion date, last sync and its status,
and the open alerts about each account."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from aggregator.portal.selectors import dashboard_for, last_month_same_day
from aggregator.tenancy.models import Organization
from billing.alerts.models import Alert
from billing.ledger.services import credit_purchase_record
from billing.ledger.settlement import settle_vendor_account
from providers.models import SyncRun
from tests.billing.conftest import cost
from tests.factories import AlertFactory, SyncRunFactory, VendorAccountFactory
from tests.portal.conftest import text


def test_each_vendor_card_shows_balance_runway_sync_and_alerts(as_viewer: Client, organization: Organization) -> None:
    now = timezone.now()
    today = now.date()
    account = VendorAccountFactory(organization=organization, label="OpenAI prod", last_sync_at=now)
    credit_purchase_record(
        vendor_account=account,
        amount=Decimal("500"),
        currency="USD",
        kind="purchase",
        effective_at=now - timedelta(days=40),
    )
    for i in range(1, 4):
        cost(account, today - timedelta(days=i), "12.50", key=f"k{i}")
    settle_vendor_account(vendor_account_id=account.pk)
    SyncRunFactory(vendor_account=account, status=SyncRun.Status.FAILED)
    AlertFactory(
        organization=organization,
        vendor_account=account,
        kind=Alert.Kind.SYNC_FAILING,
        subject=f"va:{account.pk}",
        message="Syncs of OpenAI prod have failed for 6 hours.",
    )
    quiet = VendorAccountFactory(organization=organization, label="Claude", vendor="anthropic")

    page = text(as_viewer.get("/"))
    card = page.split('data-vendor="openai"')[1].split("</article>")[0]
    assert "462.50 USD" in card  # 500 bought less 3 × 12.50
    assert f"37.0 days ({today + timedelta(days=37):%Y-%m-%d})" in card  # 462.50 / 12.50 a day
    assert f"{now:%Y-%m-%d}" in card and '<span class="badge run-failed">Failed</span>' in card
    assert '<span class="badge status-active">Active</span>' in card
    assert "Syncs of OpenAI prod have failed for 6 hours." in card
    other = page.split('data-vendor="anthropic"')[1].split("</article>")[0]
    assert "never" in other and "Syncs of" not in other
    assert f'href="/vendor-accounts/{quiet.pk}/"' in other and f'href="/credits/?account={quiet.pk}"' in other


@pytest.mark.parametrize(
    ("today", "compared_with"),
    [
        (date(2026, 11, 28), date(2026, 10, 28)),
        (date(2026, 3, 31), date(2026, 2, 28)),  # February is shorter: its last day
        (date(2028, 3, 30), date(2028, 2, 29)),
        (date(2026, 5, 31), date(2026, 4, 30)),
        (date(2026, 1, 15), date(2025, 12, 15)),
        (date(2026, 12, 1), date(2026, 11, 1)),
    ],
)
def test_month_to_date_compares_with_the_same_days_of_last_month(today: date, compared_with: date) -> None:
    assert last_month_same_day(today) == compared_with


def test_month_to_date_against_last_month_and_the_daily_chart_by_vendor(organization: Organization) -> None:
    openai = VendorAccountFactory(organization=organization, label="OpenAI prod")
    claude = VendorAccountFactory(organization=organization, label="Claude", vendor="anthropic")
    for account, day, amount in [
        (openai, date(2026, 2, 27), "10.00"),
        (openai, date(2026, 2, 28), "5.00"),
        (openai, date(2026, 3, 2), "7.25"),
        (openai, date(2026, 3, 30), "1.50"),
        (claude, date(2026, 3, 30), "2.00"),
    ]:
        cost(account, day, amount, key=f"{account.pk}-{day}")
    for account in (openai, claude):
        settle_vendor_account(vendor_account_id=account.pk)

    data = dashboard_for(organization=organization, today=date(2026, 3, 31))
    # March 1-31 against February 1-28 (not against February plus the first days of March).
    assert (data.month_to_date, data.last_month_same_days) == (Decimal("10.75"), Decimal("15.00"))
    assert data.daily == [
        (date(2026, 3, 2), {"openai": Decimal("7.25")}),
        (date(2026, 3, 30), {"anthropic": Decimal("2.00"), "openai": Decimal("1.50")}),
    ]

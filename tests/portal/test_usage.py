"""Portal usage explorer: filters, totals, breakdown, and the CSV and FOCUS exports of the same
selection, within the member's organization only."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.test import Client

from aggregator.tenancy.models import Organization
from providers.focus import FOCUS_COLUMNS
from providers.models import CostRecord, VendorAccount
from tests.factories import CostRecordFactory, VendorAccountFactory
from tests.portal.conftest import text

NOV = datetime(2026, 11, 1, tzinfo=UTC)


def _record(
    account: VendorAccount, day: int, amount: str, model: str, project: str = "", currency: str = "USD"
) -> None:
    start = NOV + timedelta(days=day - 1)
    CostRecordFactory(
        vendor_account=account,
        charge_period_start=start,
        charge_period_end=start + timedelta(days=1),
        billed_cost=Decimal(amount),
        service_name=model,
        project=project,
        billing_currency=currency,
    )


@pytest.fixture
def costs(organization: Organization, other_organization: Organization) -> None:
    openai = VendorAccountFactory(organization=organization, vendor="openai", label="OpenAI prod")
    anthropic = VendorAccountFactory(organization=organization, vendor="anthropic", label="Claude")
    _record(openai, 3, "10.125", "gpt-4o", "web")
    _record(openai, 4, "2.50", "gpt-4o-mini", "batch")
    _record(anthropic, 4, "7.25", "claude-sonnet-4", "web")
    _record(openai, 20, "100", "gpt-4o", "web")
    _record(VendorAccountFactory(organization=other_organization), 4, "999", "gpt-4o")


def test_totals_and_breakdown_of_a_date_range(as_viewer: Client, costs: None) -> None:
    page = text(as_viewer.get("/usage/?start=2026-11-01&end=2026-11-10"))
    assert '<p class="figure" data-currency="USD">19.88 USD' in page  # 10.125 + 2.50 + 7.25
    assert "3 cost records" in page
    assert '<td>openai</td><td class="num">12.63 USD</td>' in page
    assert '<td>anthropic</td><td class="num">7.25 USD</td>' in page
    assert "999" not in page


@pytest.mark.parametrize(
    ("query", "total"),
    [
        ("vendor=anthropic", "7.25"),
        ("model=gpt-4o", "110.13"),
        ("project=batch", "2.50"),
        ("vendor=openai&model=gpt-4o&start=2026-11-15", "100.00"),
    ],
)
def test_filters(as_viewer: Client, costs: None, query: str, total: str) -> None:
    page = text(as_viewer.get(f"/usage/?start=2026-11-01&end=2026-11-30&{query}"))
    assert f'data-currency="USD">{total} USD' in page


def test_breakdown_by_model_and_project(as_viewer: Client, costs: None) -> None:
    page = text(as_viewer.get("/usage/?start=2026-11-01&end=2026-11-30&group_by=model"))
    assert '<td>gpt-4o</td><td class="num">110.13 USD</td>' in page
    page = text(as_viewer.get("/usage/?start=2026-11-01&end=2026-11-30&group_by=project"))
    assert '<td>web</td><td class="num">117.38 USD</td>' in page


def test_an_end_before_the_start_is_refused_with_a_clear_message(as_viewer: Client, costs: None) -> None:
    response = as_viewer.get("/usage/?start=2026-11-10&end=2026-11-01")
    assert response.status_code == 400
    assert "The end date must be on or after the start date." in text(response)


def test_an_unknown_vendor_is_refused(as_viewer: Client, costs: None) -> None:
    response = as_viewer.get("/usage/?vendor=nope")
    assert response.status_code == 400
    assert "Select a valid choice. nope is not one of the available choices." in text(response)


def test_the_csv_export_holds_the_selected_records_exactly(as_viewer: Client, costs: None) -> None:
    response = as_viewer.get("/usage/costs.csv?start=2026-11-01&end=2026-11-10&vendor=openai")
    assert response["Content-Disposition"] == 'attachment; filename="costs-acme-2026-11-01-2026-11-10.csv"'
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == [
        "date",
        "vendor",
        "account",
        "model",
        "description",
        "project",
        "quantity",
        "unit",
        "billed_cost",
        "currency",
    ]
    assert [r[0:4] + r[5:6] + r[8:] for r in rows[1:]] == [
        ["2026-11-03", "openai", "OpenAI prod", "gpt-4o", "web", "10.125", "USD"],
        ["2026-11-04", "openai", "OpenAI prod", "gpt-4o-mini", "batch", "2.5", "USD"],
    ]


def test_the_focus_export_uses_the_focus_columns_and_the_same_filters(as_viewer: Client, costs: None) -> None:
    response = as_viewer.get("/usage/focus.csv?start=2026-11-01&end=2026-11-30&model=gpt-4o")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert tuple(rows[0]) == FOCUS_COLUMNS
    assert [(r["ServiceName"], r["BilledCost"], r["BillingAccountId"]) for r in rows] == [
        ("gpt-4o", "10.125", "acme"),
        ("gpt-4o", "100", "acme"),
    ]


def test_spreadsheet_formulas_in_vendor_names_are_defused(as_viewer: Client, organization: Organization) -> None:
    account = VendorAccountFactory(organization=organization, label="=HYPERLINK(1)")
    _record(account, 2, "1", "@SUM(A1)", "+proj")
    body = b"".join(as_viewer.get("/usage/costs.csv?start=2026-11-01&end=2026-11-02").streaming_content).decode()
    assert "'=HYPERLINK(1),'@SUM(A1),,'+proj" in body


def test_without_dates_the_last_30_days_are_shown(as_viewer: Client, organization: Organization) -> None:
    account = VendorAccountFactory(organization=organization)
    now = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    CostRecordFactory(vendor_account=account, charge_period_start=now - timedelta(days=2), billed_cost=Decimal("4"))
    CostRecordFactory(vendor_account=account, charge_period_start=now - timedelta(days=45), billed_cost=Decimal("8"))
    assert 'data-currency="USD">4.00 USD' in text(as_viewer.get("/usage/"))
    assert CostRecord.objects.count() == 2

"""FOCUS CSV export of an organization's cost records (column names from FinOps FOCUS)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from django.db.models import QuerySet

from providers.models import CostRecord

FOCUS_COLUMNS = (
    "BillingAccountId",
    "BillingAccountName",
    "SubAccountId",
    "ProviderName",
    "PublisherName",
    "InvoiceIssuerName",
    "ServiceCategory",
    "ServiceName",
    "ChargeCategory",
    "ChargeDescription",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ConsumedQuantity",
    "ConsumedUnit",
    "BilledCost",
    "EffectiveCost",
    "BillingCurrency",
    "x_VendorAccountId",
    "x_VendorAccountLabel",
)


class _Echo:
    def write(self, value: str) -> str:
        return value


def _iso(value: Any) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _plain(amount: Decimal) -> str:
    """Without trailing zeros and never in exponent form (1000, not 1E+3)."""
    return format(amount.normalize(), "f")


def focus_csv_lines(*, records: QuerySet[CostRecord]) -> Iterator[str]:
    """Yield the CSV line by line (header first), streaming the rows from the database."""
    writer = csv.writer(_Echo())
    yield writer.writerow(FOCUS_COLUMNS)
    rows = records.select_related("vendor_account", "organization").order_by("charge_period_start", "id")
    for r in rows.iterator(chunk_size=2000):
        account = r.vendor_account
        provider = account.label if r.vendor == "file_import" else r.vendor
        yield writer.writerow(
            (
                r.organization.slug,
                r.organization.name,
                r.project,
                provider,
                provider,
                provider,
                "AI and Machine Learning",
                r.service_name,
                "Usage",
                r.charge_description,
                _iso(r.charge_period_start),
                _iso(r.charge_period_end),
                "" if r.consumed_quantity is None else _plain(r.consumed_quantity),
                r.consumed_unit,
                _plain(r.billed_cost),
                _plain(r.billed_cost),
                r.billing_currency,
                account.pk,
                account.label,
            )
        )

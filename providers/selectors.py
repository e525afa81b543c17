"""Reads of cost data, always within one organization."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import QuerySet, Sum
from django.db.models.functions import TruncDate

from aggregator.tenancy.models import Organization
from aggregator.tenancy.scoping import scoped
from providers.models import CostRecord

UTC_MIDNIGHT = time(0, 0)


def day_start(day: date) -> datetime:
    from datetime import UTC

    return datetime.combine(day, UTC_MIDNIGHT, tzinfo=UTC)


def cost_records_filter(
    *,
    organization: Organization,
    vendor: str | None = None,
    vendor_account_id: int | None = None,
    start: date | None = None,
    end: date | None = None,
    model: str | None = None,
    project: str | None = None,
) -> QuerySet[CostRecord]:
    """Cost records of ``organization`` whose charge period starts in [start, end] (whole UTC days)."""
    records = scoped(CostRecord, organization)
    if vendor:
        records = records.filter(vendor=vendor)
    if vendor_account_id:
        records = records.filter(vendor_account_id=vendor_account_id)
    if start:
        records = records.filter(charge_period_start__gte=day_start(start))
    if end:
        records = records.filter(charge_period_start__lt=day_start(end + timedelta(days=1)))
    if model:
        records = records.filter(service_name=model)
    if project:
        records = records.filter(project=project)
    return records


def costs_daily(*, records: QuerySet[CostRecord], group_by: str) -> list[dict[str, Any]]:
    """Billed cost per UTC day and vendor (or model), per currency; amounts keep full precision."""
    dimension = {"vendor": "vendor", "model": "service_name"}[group_by]
    rows = (
        records.annotate(day=TruncDate("charge_period_start"))
        .values("day", dimension, "billing_currency")
        .annotate(billed_cost=Sum("billed_cost"))
        .order_by("day", dimension, "billing_currency")
    )
    return [
        {
            "date": row["day"],
            group_by: row[dimension],
            "billed_cost": row["billed_cost"] if row["billed_cost"] is not None else Decimal(0),
            "billing_currency": row["billing_currency"],
        }
        for row in rows
    ]

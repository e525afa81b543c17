"""Period close: one draft invoice per organization per period, built from the ledger and the
cost records, then finalized at once unless the organization reviews drafts first."""

from __future__ import annotations

import calendar
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.db import transaction
from django.db.models import Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from aggregator.money import quantize
from aggregator.tenancy.models import Issuer, Organization
from billing.invoicing.models import Invoice, InvoiceLine
from billing.invoicing.tax import tax_decision
from billing.ledger import accounts
from billing.ledger.flows import vendor_account_settle
from billing.ledger.models import LedgerEntry, LedgerTransaction
from billing.ledger.selectors import balance_of
from providers.models import CostRecord, VendorAccount


class CloseError(Exception):
    """The period cannot be closed for this organization; the message says why."""


def month_bounds(period: str) -> tuple[date, date]:
    """``"2026-10"`` -> (2026-10-01, 2026-10-31)."""
    try:
        year, month = (int(part) for part in period.split("-"))
        last = calendar.monthrange(year, month)[1]
    except (ValueError, calendar.IllegalMonthError):
        raise CloseError(f"{period!r} is not a period: use YYYY-MM, e.g. 2026-10.") from None
    return date(year, month, 1), date(year, month, last)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0, 0), tzinfo=UTC)


@dataclass
class _Group:
    vendor: str
    vendor_label: str
    description: str
    original: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    converted: Decimal = Decimal(0)
    quantity: Decimal | None = Decimal(0)
    unit: str | None = None


def _group_key(record: dict, grouping: str) -> str:
    if grouping == Invoice.Grouping.VENDOR_PROJECT:
        return record["project"] or "(no project)"
    if grouping == Invoice.Grouping.VENDOR_MODEL:
        return record["service_name"] or "(other)"
    return ""


def build_lines(*, organization: Organization, start: date, end: date, grouping: str) -> list[InvoiceLine]:
    """Usage lines per vendor account and model/project at each day's settled rate, and a fee line
    per vendor account. Amounts are rounded once per line (half up)."""
    charges = LedgerTransaction.objects.filter(
        organization=organization,
        kind=LedgerTransaction.Kind.CUSTOMER_CHARGE,
        settlement_day__gte=start,
        settlement_day__lte=end,
    )
    rates: dict[tuple[int | None, date | None, str], Decimal] = {}
    fees: dict[int | None, Decimal] = defaultdict(Decimal)
    for vendor_account_id, settlement_day, meta in charges.values_list(
        "vendor_account_id", "settlement_day", "metadata"
    ):
        rates[(vendor_account_id, settlement_day, meta["source_currency"])] = Decimal(meta["rate"])
        fees[vendor_account_id] += Decimal(meta["fee"])
    accounts_by_id = {a.pk: a for a in VendorAccount.objects.filter(organization=organization)}
    rows = (
        CostRecord.objects.filter(
            organization=organization,
            charge_period_start__gte=_midnight(start),
            charge_period_start__lt=_midnight(end + timedelta(days=1)),
        )
        .annotate(day=TruncDate("charge_period_start"))
        .values("vendor_account_id", "day", "billing_currency", "service_name", "project", "consumed_unit")
        .annotate(cost=Sum("billed_cost"), quantity=Sum("consumed_quantity"))
    )
    groups: dict[tuple[int, str], _Group] = {}
    for row in rows:
        rate = rates.get((row["vendor_account_id"], row["day"], row["billing_currency"]))
        if rate is None or not row["cost"]:
            continue  # nothing settled for that day: nothing billed
        account = accounts_by_id[row["vendor_account_id"]]
        key = (account.pk, _group_key(row, grouping))
        group = groups.setdefault(key, _Group(account.vendor, account.label, key[1] or f"{account.label} usage"))
        group.original[row["billing_currency"]] += Decimal(row["cost"])
        group.converted += Decimal(row["cost"]) * rate
        if row["quantity"] is not None and group.quantity is not None and group.unit in (None, row["consumed_unit"]):
            group.quantity += Decimal(row["quantity"])
            group.unit = row["consumed_unit"]
        elif row["quantity"] is not None:
            group.quantity, group.unit = None, None  # mixed units: no meaningful total quantity
    lines = []
    currency = organization.currency
    position = 0
    for account_id in sorted(
        {k[0] for k in groups}, key=lambda pk: (accounts_by_id[pk].vendor, accounts_by_id[pk].label)
    ):
        account = accounts_by_id[account_id]
        for _key, group in sorted((k, g) for k, g in groups.items() if k[0] == account_id):
            original_currency, original = next(iter(group.original.items())) if len(group.original) == 1 else ("", None)
            amount = quantize(group.converted, currency, rounding="ROUND_HALF_UP")
            position += 1
            lines.append(
                InvoiceLine(
                    kind=InvoiceLine.Kind.USAGE,
                    vendor=account.vendor,
                    vendor_label=account.label,
                    description=group.description,
                    quantity=group.quantity if group.unit else None,
                    unit=group.unit or "",
                    original_amount=original,
                    original_currency=original_currency,
                    rate=(group.converted / original).quantize(Decimal("1e-12")) if original else None,
                    amount=amount,
                    position=position,
                )
            )
        if fees.get(account_id):
            position += 1
            lines.append(
                InvoiceLine(
                    kind=InvoiceLine.Kind.FEE,
                    vendor=account.vendor,
                    vendor_label=account.label,
                    description=f"Service fee on {account.label}",
                    amount=quantize(fees[account_id], currency, rounding="ROUND_HALF_UP"),
                    position=position,
                )
            )
    return lines


def issuer_for(organization: Organization) -> Issuer:
    issuer = organization.issuer or Issuer.objects.filter(is_default=True).first()
    if issuer is None:
        raise CloseError("No issuer: create one in the admin (Customers and access > Issuers) and mark it default.")
    return issuer


@transaction.atomic
def invoice_draft_build(*, organization: Organization, period: str) -> Invoice:
    """The period's draft, created or rebuilt from the ledger. A finalized invoice is returned as is."""
    start, end = month_bounds(period)
    existing = (
        Invoice.objects.select_for_update()
        .filter(organization=organization, period_start=start, period_end=end)
        .first()
    )
    if existing is not None and not existing.is_draft:
        return existing
    issuer = issuer_for(organization)
    decision = tax_decision(
        regime=issuer.tax_regime,
        issuer_country=issuer.country,
        customer_country=organization.country,
        customer_tax_id=organization.tax_id,
    )
    invoice = existing or Invoice(organization=organization, period_start=start, period_end=end)
    invoice.issuer = issuer
    invoice.currency = organization.currency
    invoice.locale = organization.locale
    invoice.billing_mode = organization.billing_mode
    invoice.grouping = organization.invoice_grouping
    invoice.tax_note = decision.note
    if organization.invoice_review_days and invoice.review_until is None:
        invoice.review_until = timezone.now() + timedelta(days=organization.invoice_review_days)
    invoice.save()
    invoice.lines.filter(kind__in=[InvoiceLine.Kind.USAGE, InvoiceLine.Kind.FEE]).delete()
    lines = build_lines(organization=organization, start=start, end=end, grouping=invoice.grouping)
    for line in lines:
        line.invoice = invoice
        line.tax_rate = decision.rate
    InvoiceLine.objects.bulk_create(lines)
    from billing.invoicing.services import invoice_totals_refresh

    return invoice_totals_refresh(invoice=invoice)


def wallet_available(*, organization: Organization, start: date, end: date) -> Decimal:
    """What the prepaid wallet could pay for this period: its balance at the start (a negative one,
    an unpaid overage, is made good first) plus what was topped up during the period."""
    key = accounts.customer_wallet(organization.pk, organization.currency).key
    at_start = -balance_of(key=key, at=_midnight(start))
    topped_up = LedgerEntry.objects.filter(
        account__key=key,
        transaction__kind=LedgerTransaction.Kind.WALLET_TOPUP,
        effective_at__gte=_midnight(start),
        effective_at__lt=_midnight(end + timedelta(days=1)),
    ).aggregate(total=Sum("amount"))["total"]
    return max(Decimal(0), at_start - Decimal(topped_up or 0))


def period_close(*, organization: Organization, period: str) -> Invoice:
    """Settle the organization's accounts, build the draft and finalize it unless it awaits review."""
    from billing.invoicing.services import invoice_finalize

    for account_id in VendorAccount.objects.filter(organization=organization).values_list("pk", flat=True):
        vendor_account_settle(vendor_account_id=account_id)
    invoice = invoice_draft_build(organization=organization, period=period)
    if invoice.is_draft and invoice.review_until is None:
        invoice = invoice_finalize(invoice_id=invoice.pk)
    return invoice

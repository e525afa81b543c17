"""Reads: balances (now and at a date), burn rate and runway."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal

from django.db.models import Sum

from aggregator.tenancy.models import Organization
from billing.ledger import accounts
from billing.ledger.models import LedgerAccount, LedgerEntry, LedgerTransaction
from billing.ledger.posting import storage_amount
from providers.models import VendorAccount

BURN_WINDOW_DAYS = 14


def balance_of(*, key: str, at: datetime | None = None) -> Decimal:
    """An account's balance now (its running balance), or at ``at``: the running balance less
    what was posted after it, so only recent entries are read."""
    account = LedgerAccount.objects.filter(key=key).only("pk", "balance").first()
    if account is None:
        return Decimal(0)
    if at is None:
        return storage_amount(Decimal(account.balance))
    later = LedgerEntry.objects.filter(account_id=account.pk, effective_at__gt=at).aggregate(total=Sum("amount"))
    return storage_amount(Decimal(account.balance) - Decimal(later["total"] or 0))


def vendor_prepaid_currencies(*, vendor_account: VendorAccount) -> list[str]:
    keys = LedgerAccount.objects.filter(key__startswith=f"vendor_prepaid:{vendor_account.pk}:")
    return sorted(keys.values_list("currency", flat=True))


def daily_amounts(*, account_key: str, kind: str, end_day: date, days: int) -> list[Decimal]:
    """Amount posted to ``account_key`` per settlement day, for the ``days`` days up to ``end_day``
    (zero on days with nothing)."""
    start_day = end_day - timedelta(days=days - 1)
    rows = dict(
        LedgerEntry.objects.filter(
            account__key=account_key,
            transaction__kind=kind,
            transaction__settlement_day__gte=start_day,
            transaction__settlement_day__lte=end_day,
        )
        .values_list("transaction__settlement_day")
        .annotate(total=Sum("amount"))
    )
    return [storage_amount(Decimal(rows.get(start_day + timedelta(days=i), 0))) for i in range(days)]


def burn_rate(amounts: list[Decimal]) -> Decimal:
    """Typical daily spend: the median of recent days, so one spike (or one idle day) barely moves
    it. Days before the first spend in the window are left out: a newly linked account is not idle."""
    first = next((i for i, amount in enumerate(amounts) if amount != 0), None)
    if first is None:
        return Decimal(0)
    return Decimal(statistics.median(amounts[first:]))


@dataclass(frozen=True)
class Runway:
    balance: Decimal
    currency: str
    burn_rate_per_day: Decimal
    runway_days: Decimal | None  # None when nothing is being spent
    depletion_date: date | None


def runway(*, balance: Decimal, currency: str, burn: Decimal, today: date) -> Runway:
    if burn <= 0:
        return Runway(balance, currency, burn, None, None)
    days = max(Decimal(0), balance / burn).quantize(Decimal("0.1"), rounding=ROUND_FLOOR)
    depletion = today + timedelta(days=int(days.to_integral_value(rounding=ROUND_FLOOR)))
    return Runway(balance, currency, burn, days, depletion)


def vendor_account_currency(*, vendor_account: VendorAccount) -> str:
    """The currency of the account's prepaid credits (the first, when several), else of its cost records."""
    currencies = vendor_prepaid_currencies(vendor_account=vendor_account)
    return currencies[0] if currencies else _vendor_currency(vendor_account)


def vendor_prepaid_balance(*, vendor_account: VendorAccount) -> tuple[str, Decimal]:
    """``vendor_account_currency`` and the balance of the prepaid credits in it, in one read."""
    first = (
        LedgerAccount.objects.filter(key__startswith=f"vendor_prepaid:{vendor_account.pk}:")
        .order_by("currency")
        .values_list("currency", "balance")
        .first()
    )
    if first is None:
        return _vendor_currency(vendor_account), Decimal(0)
    return first[0], storage_amount(Decimal(first[1]))


def vendor_account_runway(*, vendor_account: VendorAccount, today: date, currency: str | None = None) -> Runway:
    """Balance of the vendor's prepaid credits and how long they last at the recent burn rate."""
    currency = currency or vendor_account_currency(vendor_account=vendor_account)
    va, org = vendor_account.pk, vendor_account.organization_id
    balance = balance_of(key=accounts.vendor_prepaid(va, org, currency).key)
    spent = daily_amounts(
        account_key=accounts.vendor_consumption(va, org, currency).key,
        kind=LedgerTransaction.Kind.CONSUMPTION,
        end_day=today - timedelta(days=1),
        days=BURN_WINDOW_DAYS,
    )
    return runway(balance=balance, currency=currency, burn=burn_rate(spent), today=today)


def wallet_runway(*, organization: Organization, today: date) -> Runway:
    """The prepaid wallet's balance (positive: money held for the customer) and its runway."""
    key = accounts.customer_wallet(organization.pk, organization.currency).key
    balance = -balance_of(key=key)
    spent = daily_amounts(
        account_key=key,
        kind=LedgerTransaction.Kind.CUSTOMER_CHARGE,
        end_day=today - timedelta(days=1),
        days=BURN_WINDOW_DAYS,
    )
    return runway(balance=balance, currency=organization.currency, burn=burn_rate(spent), today=today)


def _vendor_currency(vendor_account: VendorAccount) -> str:
    last = (
        vendor_account.cost_records.order_by("-charge_period_start").values_list("billing_currency", flat=True).first()
    )
    return last or "USD"

"""What the portal dashboard shows, read in a fixed number of queries whatever the data volume."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from django.db.models import OuterRef, Subquery
from django.utils import timezone

from aggregator.tenancy.models import Organization
from billing.alerts.models import Alert
from billing.ledger import accounts
from billing.ledger.models import LedgerAccount, LedgerEntry, LedgerTransaction
from billing.ledger.selectors import BURN_WINDOW_DAYS, Runway, burn_rate, runway
from providers.models import SyncRun, VendorAccount


@dataclass(frozen=True)
class VendorCard:
    account: VendorAccount
    balance: Decimal | None
    currency: str
    burn_rate_per_day: Decimal
    runway_days: Decimal | None
    depletion_date: date | None
    last_run_status: str | None = None  # of the newest sync run (SyncRun.Status), None before any
    alerts: tuple[Alert, ...] = ()  # open alerts about this account


@dataclass(frozen=True)
class Dashboard:
    currency: str
    month_to_date: Decimal
    last_month_same_days: Decimal
    cards: list[VendorCard]
    alerts: list[Alert]
    daily: list[tuple[date, dict[str, Decimal]]]  # per day, charged amount by vendor (invoice currency)


def last_month_same_day(today: date) -> date:
    """The day of last month to compare month-to-date with: the same day of the month, or last
    month's last day when it is shorter (March 31 compares with February 28 or 29)."""
    month_start = today.replace(day=1)
    last_month_end = month_start - timedelta(days=1)
    return min(last_month_end.replace(day=1) + timedelta(days=today.day - 1), last_month_end)


def dashboard_for(*, organization: Organization, today: date | None = None) -> Dashboard:
    today = today or timezone.now().date()
    month_start = today.replace(day=1)
    last_month_start = (month_start - timedelta(days=1)).replace(day=1)
    window_start = min(last_month_start, today - timedelta(days=BURN_WINDOW_DAYS + 1))
    charges = LedgerEntry.objects.filter(
        account__key=_debit_key(organization),
        transaction__kind=LedgerTransaction.Kind.CUSTOMER_CHARGE,
        transaction__settlement_day__gte=window_start,
    ).values_list(
        "transaction__settlement_day", "transaction__vendor_account__vendor", "amount"
    )  # one query: every charge of the window
    by_day: dict[date | None, dict[str, Decimal]] = {}
    for day, vendor, amount in charges:
        by_day.setdefault(day, {}).setdefault(vendor, Decimal(0))
        by_day[day][vendor] += Decimal(amount)
    mtd = Decimal(sum((sum(v.values()) for d, v in by_day.items() if d and d >= month_start), Decimal(0)))
    same_days_last_month = last_month_same_day(today)
    last = Decimal(
        sum(
            (sum(v.values()) for d, v in by_day.items() if d and last_month_start <= d <= same_days_last_month),
            Decimal(0),
        )
    )
    daily = [(d, by_day[d]) for d in sorted(d for d in by_day if d is not None) if d >= today - timedelta(days=30)]

    last_run = SyncRun.objects.filter(vendor_account=OuterRef("pk")).order_by("-created_at", "-id")
    vendor_accounts = list(
        VendorAccount.objects.filter(organization=organization)
        .annotate(last_run_status=Subquery(last_run.values("status")[:1]))
        .order_by("vendor", "label")
    )
    open_alerts = list(Alert.objects.filter(organization=organization, status=Alert.Status.OPEN))
    alerts_by_account: dict[int, list[Alert]] = {}
    for alert in open_alerts:
        if alert.vendor_account_id is not None:
            alerts_by_account.setdefault(alert.vendor_account_id, []).append(alert)
    runways = vendor_runways(organization=organization, today=today)
    cards = []
    for account in vendor_accounts:
        result = runways.get(account.pk)
        cards.append(
            VendorCard(
                account,
                result.balance if result else None,
                result.currency if result else "",
                result.burn_rate_per_day if result else Decimal(0),
                result.runway_days if result else None,
                result.depletion_date if result else None,
                account.last_run_status,
                tuple(alerts_by_account.get(account.pk, ())),
            )
        )
    return Dashboard(organization.currency, mtd, last, cards, open_alerts[:20], daily)


def vendor_runways(*, organization: Organization, today: date) -> dict[int, Runway]:
    """Prepaid balance, burn rate and runway of each vendor account of ``organization`` that has a
    ledger, in two queries (``billing.ledger.selectors.vendor_account_runway`` reads one account)."""
    prepaid = {
        a.vendor_account_id: a
        for a in LedgerAccount.objects.filter(organization=organization, key__startswith="vendor_prepaid:")
    }
    consumption = LedgerEntry.objects.filter(
        account__organization=organization,
        account__key__startswith="vendor_consumption:",
        transaction__settlement_day__gte=today - timedelta(days=BURN_WINDOW_DAYS),
        transaction__settlement_day__lt=today,
    ).values_list("account__vendor_account_id", "transaction__settlement_day", "amount")
    spent: dict[int | None, dict[date | None, Decimal]] = {}
    for spender, day, amount in consumption:
        spent.setdefault(spender, {}).setdefault(day, Decimal(0))
        spent[spender][day] += Decimal(amount)
    result = {}
    for account_id, ledger in prepaid.items():
        if account_id is None:
            continue
        days = [
            spent.get(account_id, {}).get(today - timedelta(days=BURN_WINDOW_DAYS - i), Decimal(0))
            for i in range(BURN_WINDOW_DAYS)
        ]
        result[account_id] = runway(
            balance=Decimal(ledger.balance), currency=ledger.currency, burn=burn_rate(days), today=today
        )
    return result


def _debit_key(organization: Organization) -> str:
    if organization.billing_mode == Organization.BillingMode.PREPAID_WALLET:
        return accounts.customer_wallet(organization.pk, organization.currency).key
    return accounts.receivable(organization.pk, organization.currency).key

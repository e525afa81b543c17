"""Daily settlement: post each day's consumption from the cost records into the ledger.

For every (vendor account, UTC day, currency) the ledger holds what was posted so far; settlement
posts only the difference to what the cost records now say, so a restated day posts its delta and
an unchanged day posts nothing. The changed days of an account are settled in database
transactions of up to SETTLEMENT_BATCH_DAYS days under a lock on the vendor account, each read in
two queries and posted in one batch: a crash rolls its days back whole, and two workers settling
the same account wait for each other and post once. Each delta also charges the customer: converted to the
organization's currency at that day's rate, plus the operator's fee.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.db import transaction
from django.db.models import Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from aggregator.tenancy.models import Organization
from billing.ledger import accounts
from billing.ledger.models import LedgerEntry, LedgerTransaction, VendorFee
from billing.ledger.posting import Posting, ledger_post_many, storage_amount
from providers.models import CostRecord, VendorAccount

logger = logging.getLogger(__name__)


class SettlementError(Exception):
    """A day cannot be settled (e.g. no exchange rate); the message says what to do."""


@dataclass
class SettlementResult:
    vendor_account_id: int
    days: int = 0
    postings: int = 0
    errors: list[str] = field(default_factory=list)


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(0, 0), tzinfo=UTC)
    return start, start + timedelta(days=1)


def fee_percent(*, organization: Organization, vendor: str) -> Decimal:
    override = (
        VendorFee.objects.filter(organization=organization, vendor=vendor).values_list("percent", flat=True).first()
    )
    return Decimal(override) if override is not None else Decimal(organization.fee_percent)


def settle_vendor_account_day(*, vendor_account_id: int, day: date, fees: dict[str, Decimal] | None = None) -> int:
    """Post the difference between the day's cost records and what the ledger holds. Returns the
    number of transactions posted (0 when nothing changed). ``fees`` keeps the fee percentage of
    each vendor across the days of one settlement pass."""
    return sum(settle_vendor_account_days(vendor_account_id=vendor_account_id, days=[day], fees=fees).values())


def settle_vendor_account_days(
    *,
    vendor_account_id: int,
    days: list[date],
    fees: dict[str, Decimal] | None = None,
    errors: dict[date, str] | None = None,
) -> dict[date, int]:
    """Settle ``days`` in one database transaction under a lock on the vendor account: both sides are
    read once for all the days, and the deltas of every day are posted together. Returns the number
    of transactions posted per settled day. A day that cannot be settled (no exchange rate) raises
    SettlementError, or, when ``errors`` is given, is left out, posts nothing and is put in ``errors``."""
    fees = {} if fees is None else fees
    with transaction.atomic():
        account = VendorAccount.objects.select_for_update().select_related("organization").get(pk=vendor_account_id)
        targets = _cost_totals(account, days)
        posted = _posted_consumption(account, days)
        postings: list[Posting] = []
        counts: dict[date, int] = {}
        for day in days:
            day_postings: list[Posting] = []
            try:
                for currency in sorted(set(targets[day]) | set(posted[day])):
                    before = posted[day].get(currency, Decimal(0))
                    after = targets[day].get(currency, Decimal(0))
                    if after != before:
                        day_postings += _delta_postings(account, day, currency, before, after, fees)
            except SettlementError as exc:
                if errors is None:
                    raise
                errors[day] = str(exc)
                continue
            postings += day_postings
            counts[day] = len(day_postings)
        if postings:
            ledger_post_many(postings=postings)
        return counts


def _cost_totals(account: VendorAccount, days: list[date]) -> dict[date, dict[str, Decimal]]:
    """What the cost records say per day and currency (storage precision)."""
    totals: dict[date, dict[str, Decimal]] = defaultdict(dict)
    wanted = set(days)
    rows = (
        CostRecord.objects.filter(
            vendor_account_id=account.pk,
            charge_period_start__gte=day_bounds(min(days))[0],
            charge_period_start__lt=day_bounds(max(days))[1],
        )
        .annotate(day=TruncDate("charge_period_start", tzinfo=UTC))
        .values_list("day", "billing_currency")
        .annotate(total=Sum("billed_cost"))
    )
    for day, currency, total in rows:
        if day in wanted:
            totals[day][currency] = storage_amount(total)
    return totals


def _posted_consumption(account: VendorAccount, days: list[date]) -> dict[date, dict[str, Decimal]]:
    """What the ledger holds per settlement day and currency."""
    posted: dict[date, dict[str, Decimal]] = defaultdict(dict)
    rows = (
        LedgerEntry.objects.filter(
            transaction__vendor_account_id=account.pk,
            transaction__kind=LedgerTransaction.Kind.CONSUMPTION,
            transaction__settlement_day__in=days,
            account__key__startswith=f"vendor_consumption:{account.pk}:",
        )
        .values_list("transaction__settlement_day", "currency")
        .annotate(total=Sum("amount"))
    )
    for day, currency, total in rows:
        posted[day][currency] = storage_amount(Decimal(total))
    return posted


def _delta_postings(
    account: VendorAccount, day: date, currency: str, before: Decimal, after: Decimal, fees: dict[str, Decimal]
) -> list[Posting]:
    """The consumption and the customer charge of one delta."""
    from billing.fx.selectors import FxRateMissing, convert

    at = day_bounds(day)[1]
    org = account.organization
    va = account.pk
    delta = after - before
    transition = f"{va}:{day.isoformat()}:{currency}:{before}->{after}"
    consumption = Posting(
        kind=LedgerTransaction.Kind.CONSUMPTION,
        idempotency_key=f"consumption:{transition}",
        entries=[
            (accounts.vendor_consumption(va, org.pk, currency), delta),
            (accounts.vendor_prepaid(va, org.pk, currency), -delta),
        ],
        effective_at=at,
        organization_id=org.pk,
        vendor_account_id=va,
        settlement_day=day,
        description=f"{account.label} consumption on {day.isoformat()}",
        metadata={"before": str(before), "after": str(after)},
    )
    try:
        converted, quote = convert(amount=delta, from_currency=currency, to_currency=org.currency, day=day)
    except FxRateMissing as exc:
        raise SettlementError(str(exc)) from None
    converted = storage_amount(converted)
    if account.vendor not in fees:
        fees[account.vendor] = fee_percent(organization=org, vendor=account.vendor)
    fee = storage_amount(converted * fees[account.vendor] / 100)
    debit = (
        accounts.customer_wallet(org.pk, org.currency)
        if org.billing_mode == Organization.BillingMode.PREPAID_WALLET
        else accounts.receivable(org.pk, org.currency)
    )
    charge = Posting(
        kind=LedgerTransaction.Kind.CUSTOMER_CHARGE,
        idempotency_key=f"charge:{transition}",
        entries=[
            (debit, converted + fee),
            (accounts.revenue_consumption(org.pk, org.currency), -converted),
            (accounts.revenue_fees(org.pk, org.currency), -fee),
        ],
        effective_at=at,
        organization_id=org.pk,
        vendor_account_id=va,
        settlement_day=day,
        description=f"{account.label} on {day.isoformat()}",
        metadata={
            "source_amount": str(delta),
            "source_currency": currency,
            "rate": str(quote.rate),
            "rate_day": quote.day.isoformat(),
            "rate_source": quote.source,
            "fee": str(fee),
        },
    )
    return [consumption, charge]


def days_to_settle(*, account: VendorAccount, since: datetime | None) -> list[date]:
    """UTC days whose cost records changed since ``since`` (all days when None)."""
    records = CostRecord.objects.filter(vendor_account_id=account.pk)
    if since is not None:
        records = records.filter(updated_at__gte=since)
    days = records.annotate(day=TruncDate("charge_period_start")).values_list("day", flat=True).distinct()
    return sorted(set(days))


# Days settled per transaction: a quarter, so that the backfill of a newly linked account (90 days) or
# a re-settlement of the whole quarter takes one lock and two reads.
SETTLEMENT_BATCH_DAYS = 92


def unchanged_days(*, account: VendorAccount, days: list[date]) -> set[date]:
    """Those of ``days`` whose cost records add up to what the ledger holds, read in two queries
    without the account's lock: settling them would post nothing. The ledger is read before the cost
    records, so a day that another worker settles in between reads as changed (and is then settled
    under the lock, posting nothing), never the other way round."""
    posted = _posted_consumption(account, days)
    targets = _cost_totals(account, days)
    return {day for day in days if targets[day] == posted[day]}


def settle_vendor_account(
    *, vendor_account_id: int, day: date | None = None, account: VendorAccount | None = None
) -> SettlementResult:
    """Settle one day, or every day whose cost records changed since the last settlement, in
    transactions of up to SETTLEMENT_BATCH_DAYS days; days found unchanged without the lock count as
    settled. ``account``: the vendor account when the caller has just read it."""
    account = account if account is not None else VendorAccount.objects.get(pk=vendor_account_id)
    started = timezone.now()
    days = [day] if day else days_to_settle(account=account, since=account.settled_at)
    result = SettlementResult(vendor_account_id=vendor_account_id)
    if day is None and days:
        unchanged = unchanged_days(account=account, days=days)
        result.days += len(unchanged)
        days = [each for each in days if each not in unchanged]
    fees: dict[str, Decimal] = {}
    for offset in range(0, len(days), SETTLEMENT_BATCH_DAYS):
        errors: dict[date, str] = {}
        counts = settle_vendor_account_days(
            vendor_account_id=vendor_account_id,
            days=days[offset : offset + SETTLEMENT_BATCH_DAYS],
            fees=fees,
            errors=errors,
        )
        result.days += len(counts)
        result.postings += sum(counts.values())
        for each, message in sorted(errors.items()):
            result.errors.append(f"{each.isoformat()}: {message}")
            logger.warning("settlement of account %s on %s failed: %s", vendor_account_id, each, message)
    if day is None and not result.errors:
        # Only a full, clean pass moves the watermark: failed days are retried next time.
        VendorAccount.objects.filter(pk=vendor_account_id).update(settled_at=started)
    return result

"""Daily settlement: post each day's consumption from the cost records into the ledger.

For every (vendor account, UTC day, currency) the ledger holds what was posted so far; settlement
posts only the difference to what the cost records now say, so a restated day posts its delta and
an unchanged day posts nothing. Each account-day is one database transaction under a lock on the
vendor account: a crash rolls the day back whole, and two workers settling the same account wait
for each other and post once. Each delta also charges the customer: converted to the
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
    fees = {} if fees is None else fees
    with transaction.atomic():
        account = VendorAccount.objects.select_for_update().select_related("organization").get(pk=vendor_account_id)
        start, end = day_bounds(day)
        targets: dict[str, Decimal] = defaultdict(Decimal)
        for currency, total in (
            CostRecord.objects.filter(
                vendor_account_id=account.pk, charge_period_start__gte=start, charge_period_start__lt=end
            )
            .values_list("billing_currency")
            .annotate(total=Sum("billed_cost"))
        ):
            targets[currency] = storage_amount(total)
        posted = _posted_consumption(account, day)
        count = 0
        for currency in sorted(set(targets) | set(posted)):
            delta = targets[currency] - posted.get(currency, Decimal(0))
            if delta != 0:
                before = posted.get(currency, Decimal(0))
                count += _post_delta(account, day, currency, before, targets[currency], end, fees)
        return count


def _posted_consumption(account: VendorAccount, day: date) -> dict[str, Decimal]:
    rows = (
        LedgerEntry.objects.filter(
            transaction__vendor_account_id=account.pk,
            transaction__kind=LedgerTransaction.Kind.CONSUMPTION,
            transaction__settlement_day=day,
            account__key__startswith=f"vendor_consumption:{account.pk}:",
        )
        .values_list("currency")
        .annotate(total=Sum("amount"))
    )
    return {currency: storage_amount(Decimal(total)) for currency, total in rows}


def _post_delta(
    account: VendorAccount,
    day: date,
    currency: str,
    before: Decimal,
    after: Decimal,
    at: datetime,
    fees: dict[str, Decimal],
) -> int:
    """The consumption and the customer charge of one delta, posted together."""
    from billing.fx.selectors import FxRateMissing, convert

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
    ledger_post_many(postings=[consumption, charge])
    return 2


def days_to_settle(*, account: VendorAccount, since: datetime | None) -> list[date]:
    """UTC days whose cost records changed since ``since`` (all days when None)."""
    records = CostRecord.objects.filter(vendor_account_id=account.pk)
    if since is not None:
        records = records.filter(updated_at__gte=since)
    days = records.annotate(day=TruncDate("charge_period_start")).values_list("day", flat=True).distinct()
    return sorted(set(days))


def unchanged_days(*, account: VendorAccount, days: list[date]) -> set[date]:
    """Those of ``days`` whose cost records add up to what the ledger holds, read in two queries for
    all of them and without the account's lock: settling such a day would post nothing. What the
    ledger holds is read first, so a day another worker settles meanwhile is read as changed (and then
    settled under the lock, which posts nothing), never the other way round."""
    if not days:
        return set()
    first, last = min(days), max(days)
    posted: dict[date, dict[str, Decimal]] = defaultdict(dict)
    for settled, currency, total in (
        LedgerEntry.objects.filter(
            transaction__vendor_account_id=account.pk,
            transaction__kind=LedgerTransaction.Kind.CONSUMPTION,
            transaction__settlement_day__gte=first,
            transaction__settlement_day__lte=last,
            account__key__startswith=f"vendor_consumption:{account.pk}:",
        )
        .values_list("transaction__settlement_day", "currency")
        .annotate(total=Sum("amount"))
    ):
        posted[settled][currency] = storage_amount(Decimal(total))
    targets: dict[date, dict[str, Decimal]] = defaultdict(dict)
    for each, currency, total in (
        CostRecord.objects.filter(
            vendor_account_id=account.pk,
            charge_period_start__gte=day_bounds(first)[0],
            charge_period_start__lt=day_bounds(last)[1],
        )
        .annotate(day=TruncDate("charge_period_start", tzinfo=UTC))
        .values_list("day", "billing_currency")
        .annotate(total=Sum("billed_cost"))
    ):
        targets[each][currency] = storage_amount(total)
    return {
        each
        for each in days
        if all(
            targets[each].get(currency, Decimal(0)) == posted[each].get(currency, Decimal(0))
            for currency in set(targets[each]) | set(posted[each])
        )
    }


def settle_vendor_account(*, vendor_account_id: int, day: date | None = None) -> SettlementResult:
    """Settle one day, or every day whose cost records changed since the last settlement. A day whose
    cost records already match the ledger is counted as settled without taking the lock."""
    account = VendorAccount.objects.get(pk=vendor_account_id)
    started = timezone.now()
    days = [day] if day else days_to_settle(account=account, since=account.settled_at)
    unchanged = unchanged_days(account=account, days=days) if day is None else set()
    result = SettlementResult(vendor_account_id=vendor_account_id)
    fees: dict[str, Decimal] = {}
    for each in days:
        if each in unchanged:
            result.days += 1
            continue
        try:
            result.postings += settle_vendor_account_day(vendor_account_id=vendor_account_id, day=each, fees=fees)
            result.days += 1
        except SettlementError as exc:
            result.errors.append(f"{each.isoformat()}: {exc}")
            logger.warning("settlement of account %s on %s failed: %s", vendor_account_id, each, exc)
    if day is None and not result.errors:
        # Only a full, clean pass moves the watermark: failed days are retried next time.
        VendorAccount.objects.filter(pk=vendor_account_id).update(settled_at=started)
    return result

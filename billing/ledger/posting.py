"""Posting to the ledger: the one way money moves. Balanced per currency, idempotent by key,
append-only, running balances updated in the same transaction."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F

from aggregator.money import AMOUNT_DECIMAL_PLACES, to_decimal
from billing.ledger.accounts import AccountSpec
from billing.ledger.models import LedgerAccount, LedgerEntry, LedgerTransaction

STORAGE_EXPONENT = Decimal(1).scaleb(-AMOUNT_DECIMAL_PLACES)


class UnbalancedTransaction(ValueError):
    """The entries of a transaction do not sum to zero in some currency."""


def storage_amount(amount: Decimal) -> Decimal:
    """Round to the ledger's storage precision (10 places, half-even) before posting, so that what is
    checked to balance is exactly what is stored."""
    return to_decimal(amount).quantize(STORAGE_EXPONENT, rounding="ROUND_HALF_EVEN")


def ledger_post(
    *,
    kind: str,
    idempotency_key: str,
    entries: Sequence[tuple[AccountSpec, Decimal]],
    effective_at: datetime,
    organization_id: int | None = None,
    vendor_account_id: int | None = None,
    settlement_day: date | None = None,
    description: str = "",
    metadata: dict[str, Any] | None = None,
) -> LedgerTransaction | None:
    """Post a balanced transaction once. Posting the same key again returns the first transaction
    and changes nothing. Entries of zero are dropped; a transaction of only zeros is not posted."""
    lines = [(spec, to_decimal(amount)) for spec, amount in entries if to_decimal(amount) != 0]
    for spec, amount in lines:
        if amount != storage_amount(amount):
            raise ValueError(f"{amount} on {spec.key} has more than {AMOUNT_DECIMAL_PLACES} decimals: round it first.")
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for spec, amount in lines:
        totals[spec.currency] += amount
    unbalanced = {c: t for c, t in totals.items() if t != 0}
    if unbalanced:
        raise UnbalancedTransaction(f"Transaction {idempotency_key} does not balance: {unbalanced}")
    if not lines:
        return None

    existing = LedgerTransaction.objects.filter(idempotency_key=idempotency_key).first()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            tx = LedgerTransaction.objects.create(
                kind=kind,
                idempotency_key=idempotency_key,
                organization_id=organization_id,
                vendor_account_id=vendor_account_id,
                effective_at=effective_at,
                settlement_day=settlement_day,
                description=description,
                metadata=metadata or {},
            )
            accounts = _accounts_for([spec for spec, _ in lines])
            LedgerEntry.objects.bulk_create(
                [
                    LedgerEntry(
                        transaction=tx,
                        account=accounts[spec.key],
                        amount=amount,
                        currency=spec.currency,
                        effective_at=effective_at,
                    )
                    for spec, amount in lines
                ]
            )
            by_account: dict[int, Decimal] = defaultdict(Decimal)
            for spec, amount in lines:
                by_account[accounts[spec.key].pk] += amount
            # Lock order by primary key: two postings touching the same accounts never deadlock.
            for account_id in sorted(by_account):
                LedgerAccount.objects.filter(pk=account_id).update(balance=F("balance") + by_account[account_id])
    except IntegrityError:
        # Another worker posted the same key first: that posting stands, ours is dropped.
        existing = LedgerTransaction.objects.filter(idempotency_key=idempotency_key).first()
        if existing is None:
            raise
        return existing
    return tx


def _accounts_for(specs: Sequence[AccountSpec]) -> dict[str, LedgerAccount]:
    found = {a.key: a for a in LedgerAccount.objects.filter(key__in={s.key for s in specs})}
    for spec in specs:
        if spec.key in found:
            if found[spec.key].currency != spec.currency:
                raise ValueError(f"Ledger account {spec.key} is in {found[spec.key].currency}, not {spec.currency}.")
            continue
        with transaction.atomic():
            account, _created = LedgerAccount.objects.get_or_create(
                key=spec.key,
                defaults={
                    "kind": spec.kind,
                    "currency": spec.currency,
                    "organization_id": spec.organization_id,
                    "vendor_account_id": spec.vendor_account_id,
                },
            )
        found[spec.key] = account
    return found

"""Posting to the ledger: the one way money moves. Balanced per currency, idempotent by key,
append-only, running balances updated in the same transaction."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Case, F, Value, When

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


@dataclass(frozen=True)
class Posting:
    """One balanced transaction to post (the arguments of ``ledger_post``)."""

    kind: str
    idempotency_key: str
    entries: Sequence[tuple[AccountSpec, Decimal]]
    effective_at: datetime
    organization_id: int | None = None
    vendor_account_id: int | None = None
    settlement_day: date | None = None
    description: str = ""
    metadata: dict[str, Any] | None = field(default=None)


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
    posting = Posting(
        kind=kind,
        idempotency_key=idempotency_key,
        entries=entries,
        effective_at=effective_at,
        organization_id=organization_id,
        vendor_account_id=vendor_account_id,
        settlement_day=settlement_day,
        description=description,
        metadata=metadata,
    )
    return ledger_post_many(postings=[posting])[0]


def _checked_lines(posting: Posting) -> list[tuple[AccountSpec, Decimal]]:
    lines = [(spec, to_decimal(amount)) for spec, amount in posting.entries if to_decimal(amount) != 0]
    for spec, amount in lines:
        if amount != storage_amount(amount):
            raise ValueError(f"{amount} on {spec.key} has more than {AMOUNT_DECIMAL_PLACES} decimals: round it first.")
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for spec, amount in lines:
        totals[spec.currency] += amount
    unbalanced = {c: t for c, t in totals.items() if t != 0}
    if unbalanced:
        raise UnbalancedTransaction(f"Transaction {posting.idempotency_key} does not balance: {unbalanced}")
    return lines


def ledger_post_many(*, postings: Sequence[Posting]) -> list[LedgerTransaction | None]:
    """Post several balanced transactions, each exactly as ``ledger_post`` would (once per key, zeros
    dropped), in a handful of queries whatever their number: one read of the keys already posted, one
    insert of the transactions, one of their entries, and one update of the running balances. Returns
    each posting's transaction (the first one for a key posted before; None for a posting of zeros)."""
    checked = [(posting, _checked_lines(posting)) for posting in postings]
    keys = [posting.idempotency_key for posting, lines in checked if lines]
    if len(set(keys)) != len(keys):
        raise ValueError(f"The same idempotency key appears twice in one batch: {sorted(keys)}")
    if not keys:
        return [None] * len(postings)
    existing = {tx.idempotency_key: tx for tx in LedgerTransaction.objects.filter(idempotency_key__in=keys)}
    new = [(posting, lines) for posting, lines in checked if lines and posting.idempotency_key not in existing]
    created: dict[str, LedgerTransaction] = {}
    if new:
        try:
            with transaction.atomic():
                created = _insert(new)
        except IntegrityError:
            if len(new) > 1:
                # Another worker posted one of the keys first: post them one by one, so each of the
                # others is still posted once and that one stands.
                for posting, _lines in new:
                    tx = ledger_post_many(postings=[posting])[0]
                    assert tx is not None
                    created[posting.idempotency_key] = tx
            else:
                # Another worker posted the same key first: that posting stands, ours is dropped.
                first = LedgerTransaction.objects.filter(idempotency_key=new[0][0].idempotency_key).first()
                if first is None:
                    raise
                created[first.idempotency_key] = first
    found = existing | created
    return [found[posting.idempotency_key] if lines else None for posting, lines in checked]


def _insert(new: Sequence[tuple[Posting, list[tuple[AccountSpec, Decimal]]]]) -> dict[str, LedgerTransaction]:
    transactions = LedgerTransaction.objects.bulk_create(
        [
            LedgerTransaction(
                kind=posting.kind,
                idempotency_key=posting.idempotency_key,
                organization_id=posting.organization_id,
                vendor_account_id=posting.vendor_account_id,
                effective_at=posting.effective_at,
                settlement_day=posting.settlement_day,
                description=posting.description,
                metadata=posting.metadata or {},
            )
            for posting, _lines in new
        ]
    )
    accounts = _accounts_for([spec for _posting, lines in new for spec, _amount in lines])
    LedgerEntry.objects.bulk_create(
        [
            LedgerEntry(
                transaction=tx,
                account=accounts[spec.key],
                amount=amount,
                currency=spec.currency,
                effective_at=posting.effective_at,
            )
            for tx, (posting, lines) in zip(transactions, new, strict=True)
            for spec, amount in lines
        ]
    )
    by_account: dict[int, Decimal] = defaultdict(Decimal)
    for _posting, lines in new:
        for spec, amount in lines:
            by_account[accounts[spec.key].pk] += amount
    _balances_add(by_account)
    return {tx.idempotency_key: tx for tx in transactions}


def _balances_add(by_account: dict[int, Decimal]) -> None:
    """Add to the running balances in one UPDATE (``_accounts_for`` locked the rows)."""
    balance = LedgerAccount._meta.get_field("balance")
    LedgerAccount.objects.filter(pk__in=list(by_account)).update(
        balance=F("balance")
        + Case(*(When(pk=pk, then=Value(amount)) for pk, amount in by_account.items()), output_field=balance)
    )


def _accounts_for(specs: Sequence[AccountSpec]) -> dict[str, LedgerAccount]:
    """The ledger accounts of ``specs``, created when missing, each locked (``SELECT … FOR UPDATE``) in
    primary-key order: two postings touching the same accounts never deadlock."""
    keys = {s.key for s in specs}
    found = {a.key: a for a in LedgerAccount.objects.select_for_update().filter(key__in=keys).order_by("pk")}
    missing = False
    for spec in specs:
        if spec.key in found:
            if found[spec.key].currency != spec.currency:
                raise ValueError(f"Ledger account {spec.key} is in {found[spec.key].currency}, not {spec.currency}.")
            continue
        missing = True
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
    if missing:  # an account another posting created meanwhile is locked too
        list(LedgerAccount.objects.select_for_update().filter(key__in=keys).order_by("pk").values_list("pk"))
    return found

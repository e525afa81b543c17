"""Credit purchases and grants at vendors, their expiry, and wallet top-ups."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from aggregator.money import CurrencyError, currency_code, to_decimal
from aggregator.tenancy.models import ApiKey, Organization, User
from aggregator.tenancy.services import audit_record
from billing.ledger import accounts
from billing.ledger.models import CreditPurchase, LedgerEntry, LedgerTransaction
from billing.ledger.posting import ledger_post, storage_amount
from providers.models import VendorAccount


class LedgerInputError(ValueError):
    """Bad input for a money action; the message says what to fix."""


@transaction.atomic
def credit_purchase_record(
    *,
    vendor_account: VendorAccount,
    amount: Decimal,
    currency: str,
    kind: str,
    effective_at: datetime,
    expires_at: datetime | None = None,
    note: str = "",
    client_key: str | None = None,
    actor: User | None = None,
    actor_api_key: ApiKey | None = None,
) -> CreditPurchase:
    """Record credits bought or granted at the vendor: the vendor's prepaid balance grows."""
    if kind not in CreditPurchase.Kind.values:
        raise LedgerInputError(f"kind must be one of {', '.join(CreditPurchase.Kind.values)}.")
    try:
        currency = currency_code(currency)
    except CurrencyError as exc:
        raise LedgerInputError(str(exc)) from None
    amount = to_decimal(amount)
    if amount <= 0:
        raise LedgerInputError("amount must be positive; record corrections as a separate adjustment.")
    if amount != storage_amount(amount):
        raise LedgerInputError("amount has more than 10 decimal places.")
    if expires_at is not None and expires_at <= effective_at:
        raise LedgerInputError("expires_at must be after effective_at.")
    va, org = vendor_account.pk, vendor_account.organization_id
    source = accounts.vendor_funding if kind == CreditPurchase.Kind.PURCHASE else accounts.vendor_grants
    # Unique per recorded purchase: the row id is not known yet, so key on a fresh sequence value.
    # A client's Idempotency-Key makes a retried request return the first purchase.
    key = f"{kind}:{va}:{client_key}" if client_key else f"{kind}:{va}:{uuid.uuid4().hex}"
    previous = CreditPurchase.objects.filter(transaction__idempotency_key=key).first()
    if previous is not None:
        return previous
    tx = ledger_post(
        kind=LedgerTransaction.Kind.PURCHASE if kind == CreditPurchase.Kind.PURCHASE else LedgerTransaction.Kind.GRANT,
        idempotency_key=key,
        entries=[(accounts.vendor_prepaid(va, org, currency), amount), (source(va, org, currency), -amount)],
        effective_at=effective_at,
        organization_id=org,
        vendor_account_id=va,
        description=note or f"Credit {kind} at {vendor_account.label}",
    )
    assert tx is not None
    purchase = CreditPurchase.objects.create(
        organization_id=org,
        vendor_account=vendor_account,
        kind=kind,
        amount=amount,
        currency=currency,
        effective_at=effective_at,
        expires_at=expires_at,
        note=note,
        transaction=tx,
        created_by=actor,
    )
    audit_record(
        action=f"credit_{kind}.record",
        organization=vendor_account.organization,
        actor=actor,
        actor_api_key=actor_api_key,
        obj=purchase,
        after={
            "amount": str(amount),
            "currency": currency,
            "effective_at": effective_at.isoformat(),
            "expires_at": expires_at.isoformat() if expires_at else None,
        },
    )
    return purchase


def credits_expire_due(
    *, now: datetime | None = None, vendor_account: VendorAccount | None = None
) -> list[CreditPurchase]:
    """Post the expiry of every lot whose expiry passed (soonest first). Safe to run twice."""
    now = now or timezone.now()
    expired = []
    due = CreditPurchase.objects.filter(expires_at__lte=now, expiry_transaction__isnull=True)
    if vendor_account is not None:
        due = due.filter(vendor_account=vendor_account)
    due_ids = list(due.order_by("expires_at", "effective_at", "pk").values_list("pk", flat=True))
    for purchase_id in due_ids:
        with transaction.atomic():
            purchase = CreditPurchase.objects.select_for_update().get(pk=purchase_id)
            if purchase.expiry_transaction_id is not None:
                continue
            expired.append(_expire(purchase))
    return expired


def _expire(purchase: CreditPurchase) -> CreditPurchase:
    assert purchase.expires_at is not None
    remaining = lot_remaining(purchase=purchase, at=purchase.expires_at)
    va, org, cur = purchase.vendor_account_id, purchase.organization_id, purchase.currency
    tx = ledger_post(
        kind=LedgerTransaction.Kind.EXPIRY,
        idempotency_key=f"expiry:{purchase.pk}",
        entries=[
            (accounts.vendor_expired(va, org, cur), remaining),
            (accounts.vendor_prepaid(va, org, cur), -remaining),
        ],
        effective_at=purchase.expires_at,
        organization_id=org,
        vendor_account_id=va,
        description=f"Unused credits of {purchase.kind} {purchase.pk} expired",
        metadata={"purchase": purchase.pk},
    )
    if tx is None:  # nothing left to expire: record a zero posting so the lot is closed
        tx = LedgerTransaction.objects.create(
            kind=LedgerTransaction.Kind.EXPIRY,
            idempotency_key=f"expiry:{purchase.pk}",
            organization_id=org,
            vendor_account_id=va,
            effective_at=purchase.expires_at,
            description="Credits fully used before expiry",
            metadata={"purchase": purchase.pk},
        )
    purchase.expired_amount = remaining
    purchase.expiry_transaction = tx
    purchase.save(update_fields=["expired_amount", "expiry_transaction"])
    return purchase


def lot_remaining(*, purchase: CreditPurchase, at: datetime) -> Decimal:
    """What is left of a lot at ``at``: consumption up to then is drawn from lots in order of
    expiry (soonest first, then oldest), less what earlier-expiring lots already expired."""
    lots: Sequence[CreditPurchase] = sorted(
        CreditPurchase.objects.filter(
            vendor_account_id=purchase.vendor_account_id, currency=purchase.currency, effective_at__lte=at
        ),
        key=lambda p: (p.expires_at is None, p.expires_at or p.effective_at, p.effective_at, p.pk),
    )
    consumed = sum(
        LedgerEntry.objects.filter(
            account__key=accounts.vendor_consumption(
                purchase.vendor_account_id, purchase.organization_id, purchase.currency
            ).key,
            effective_at__lte=at,
        ).values_list("amount", flat=True),
        Decimal(0),
    )
    remaining_consumption = max(Decimal(0), consumed)
    for lot in lots:
        if lot.pk == purchase.pk:
            return max(Decimal(0), lot.amount - remaining_consumption)
        # An earlier lot absorbs consumption up to what it held; once expired, only what it had given.
        capacity = lot.amount - (lot.expired_amount or Decimal(0))
        remaining_consumption -= min(capacity, remaining_consumption)
    return Decimal(0)


@transaction.atomic
def wallet_top_up_credit(
    *, organization: Organization, amount: Decimal, gateway: str, reference: str, effective_at: datetime
) -> LedgerTransaction | None:
    """Credit the customer's prepaid wallet after a confirmed payment (idempotent by payment reference)."""
    amount = to_decimal(amount)
    if amount <= 0:
        raise LedgerInputError("A wallet top-up must be positive.")
    cur = organization.currency
    return ledger_post(
        kind=LedgerTransaction.Kind.WALLET_TOPUP,
        idempotency_key=f"wallet_topup:{gateway}:{reference}",
        entries=[(accounts.cash(gateway, cur), amount), (accounts.customer_wallet(organization.pk, cur), -amount)],
        effective_at=effective_at,
        organization_id=organization.pk,
        description=f"Wallet top-up ({gateway} {reference})",
    )

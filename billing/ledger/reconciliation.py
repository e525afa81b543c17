"""Vendor-reported balances (OpenRouter, DeepSeek) against the ledger, and consumption derived
from balance changes for vendors that report nothing else (DeepSeek)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from itertools import pairwise

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from billing.ledger import accounts
from billing.ledger.models import LedgerEntry, LedgerTransaction, Reconciliation
from billing.ledger.posting import storage_amount
from billing.ledger.selectors import balance_of
from providers.connectors.base import CostRow, connector_classes
from providers.ingest import cost_rows_upsert
from providers.models import BalanceObservation, VendorAccount

DERIVED_SERVICE = "API usage (derived from balance)"


def balance_only(vendor_account: VendorAccount) -> bool:
    cls = connector_classes().get(vendor_account.vendor)
    return cls is not None and cls.capabilities == frozenset({"balance"})


def credits_added(*, vendor_account: VendorAccount, currency: str, after: datetime, until: datetime) -> Decimal:
    """Purchases and grants recorded in (after, until]: they raise the vendor's balance without spend."""
    total = LedgerEntry.objects.filter(
        account__key=accounts.vendor_prepaid(vendor_account.pk, vendor_account.organization_id, currency).key,
        transaction__kind__in=[
            LedgerTransaction.Kind.PURCHASE,
            LedgerTransaction.Kind.GRANT,
            LedgerTransaction.Kind.VENDOR_TOPUP,
        ],
        effective_at__gt=after,
        effective_at__lte=until,
    ).aggregate(total=Sum("amount"))["total"]
    return Decimal(total or 0)


def balance_consumption_derive(*, vendor_account: VendorAccount) -> int:
    """Turn consecutive balance observations into cost rows: spent = earlier balance - later balance
    + credits recorded in between. A rise that no recorded purchase explains counts as no spend
    (reconciliation flags it). Returns the number of rows written; safe to run again."""
    observations = list(vendor_account.balance_observations.order_by("observed_at", "id"))
    rows = []
    for earlier, later in pairwise(observations):
        if earlier.currency != later.currency or later.observed_at <= earlier.observed_at:
            continue
        added = credits_added(
            vendor_account=vendor_account, currency=later.currency, after=earlier.observed_at, until=later.observed_at
        )
        spent = max(Decimal(0), Decimal(earlier.amount) - Decimal(later.amount) + added)
        rows.append(
            CostRow(
                source_key=f"derived:{later.pk}",
                charge_period_start=earlier.observed_at,
                charge_period_end=later.observed_at,
                billed_cost=storage_amount(spent),
                billing_currency=later.currency,
                service_name=DERIVED_SERVICE,
                charge_description="Balance change net of recorded purchases",
            )
        )
    return cost_rows_upsert(account=vendor_account, rows=rows, now=timezone.now()).written


@transaction.atomic
def observation_reconcile(*, observation: BalanceObservation) -> Reconciliation:
    """Compare one observation with the ledger's balance at the same moment (once per observation)."""
    existing = Reconciliation.objects.filter(observation=observation).first()
    if existing is not None:
        return existing
    account = observation.vendor_account
    key = accounts.vendor_prepaid(account.pk, account.organization_id, observation.currency).key
    ledger = balance_of(key=key, at=observation.observed_at)
    drift = storage_amount(Decimal(observation.amount) - ledger)
    tolerance = Decimal(settings.RECONCILIATION_TOLERANCE)
    return Reconciliation.objects.create(
        organization_id=account.organization_id,
        observation=observation,
        ledger_balance=ledger,
        drift=drift,
        tolerance=tolerance,
        flagged=abs(drift) > tolerance,
    )


def vendor_account_reconcile(*, vendor_account: VendorAccount) -> list[Reconciliation]:
    pending = vendor_account.balance_observations.filter(reconciliation__isnull=True).order_by("observed_at")
    return [observation_reconcile(observation=o) for o in pending]

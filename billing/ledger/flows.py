"""The daily settlement flow of one vendor account: derive, settle, reconcile, then react."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from billing.ledger.reconciliation import balance_consumption_derive, balance_only, vendor_account_reconcile
from billing.ledger.settlement import SettlementResult, settle_vendor_account
from providers.models import VendorAccount

# Steps that run after a settlement (alerts, top-up rules) register here, so the ledger does not
# import them.
AFTER_SETTLEMENT: list[Callable[[VendorAccount], None]] = []


def vendor_account_settle(*, vendor_account_id: int, day: date | None = None) -> SettlementResult:
    """Settle one account (one day, or every changed day), reconcile its reported balances and run
    the after-settlement steps. Safe to run twice: every posting is a delta keyed by its transition."""
    account = VendorAccount.objects.select_related("organization").get(pk=vendor_account_id)
    if balance_only(account):
        balance_consumption_derive(vendor_account=account)
    result = settle_vendor_account(vendor_account_id=account.pk, day=day, account=account)
    vendor_account_reconcile(vendor_account=account)
    for step in AFTER_SETTLEMENT:
        step(account)
    return result

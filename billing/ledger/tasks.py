from __future__ import annotations

from datetime import date

from celery import shared_task


@shared_task(name="billing.ledger.tasks.settle_vendor_account")
def settle_vendor_account_task(vendor_account_id: int, day: str | None = None) -> None:
    from billing.ledger.flows import vendor_account_settle

    vendor_account_settle(vendor_account_id=vendor_account_id, day=date.fromisoformat(day) if day else None)


@shared_task(name="billing.ledger.tasks.settle_all")
def settle_all_task() -> None:
    """Daily: queue one settlement per vendor account (they run in parallel on the settlement queue)."""
    from providers.models import VendorAccount

    for account_id in VendorAccount.objects.exclude(status=VendorAccount.Status.DISABLED).values_list("pk", flat=True):
        settle_vendor_account_task.delay(account_id)


@shared_task(name="billing.ledger.tasks.expire_credits")
def expire_credits_task() -> None:
    from billing.ledger.services import credits_expire_due

    credits_expire_due()

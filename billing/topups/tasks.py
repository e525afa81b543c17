"""Envelopes: take ids, call one service. Every task is safe to run twice (the services check
state under locks). They belong on the payments queue (``task_routes``: ``billing.topups.*``)."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone


@shared_task(name="billing.topups.tasks.charge")
def top_up_charge_task(top_up_id: int) -> None:
    from billing.topups.services import top_up_charge

    top_up_charge(top_up_id=top_up_id)


@shared_task(name="billing.topups.tasks.evaluate")
def top_up_rules_evaluate_task(vendor_account_id: int | None = None, organization_id: int | None = None) -> None:
    from aggregator.tenancy.models import Organization
    from billing.topups.services import top_up_rules_evaluate
    from providers.models import VendorAccount

    account = VendorAccount.objects.filter(pk=vendor_account_id).first() if vendor_account_id else None
    organization = Organization.objects.filter(pk=organization_id).first() if organization_id else None
    if account is None and organization is None:
        return  # deleted since
    top_up_rules_evaluate(vendor_account=account, organization=organization, today=timezone.now().date())


@shared_task(name="billing.topups.tasks.retry_due")
def top_up_retry_due_task() -> None:
    """Every few minutes: retries whose time came, interrupted attempts, expired confirmation links."""
    from billing.topups.services import top_up_retry_due

    top_up_retry_due(now=timezone.now())

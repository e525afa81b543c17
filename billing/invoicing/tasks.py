from __future__ import annotations

from datetime import timedelta

from celery import shared_task


# SMTP and storage errors are OSErrors: retried with backoff (the email is still sent once).
@shared_task(
    name="billing.invoicing.tasks.invoice_deliver",
    autoretry_for=(OSError,),
    retry_backoff=60,
    retry_backoff_max=3600,
    max_retries=10,
)
def invoice_deliver_task(invoice_id: int) -> None:
    """Render and store the PDF if missing, then email it if not yet emailed. Safe to run twice."""
    from billing.invoicing import delivery

    delivery.invoice_deliver(invoice_id=invoice_id)


@shared_task(name="billing.invoicing.tasks.close_period_all")
def close_period_all_task(period: str | None = None) -> None:
    """Monthly: queue the close of last month for every organization."""
    from django.utils import timezone

    from aggregator.tenancy.models import Organization

    if period is None:
        last_month = timezone.now().date().replace(day=1) - timedelta(days=1)
        period = f"{last_month:%Y-%m}"
    for organization_id in Organization.objects.values_list("pk", flat=True):
        close_period_task.delay(organization_id, period)


@shared_task(name="billing.invoicing.tasks.close_period")
def close_period_task(organization_id: int, period: str) -> None:
    from aggregator.tenancy.models import Organization
    from billing.invoicing.close import period_close

    period_close(organization=Organization.objects.get(pk=organization_id), period=period)


@shared_task(name="billing.invoicing.tasks.finalize_reviewed")
def finalize_reviewed_task() -> None:
    from billing.invoicing.services import invoices_finalize_reviewed

    invoices_finalize_reviewed()

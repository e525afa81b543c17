from celery import shared_task
from django.utils import timezone


@shared_task(name="providers.tasks.sync_run_execute")
def sync_run_execute_task(sync_run_id: int) -> None:
    from providers.services import sync_run_execute

    sync_run_execute(sync_run_id=sync_run_id)


@shared_task(name="providers.tasks.sync_due_accounts")
def sync_due_accounts_task() -> None:
    """Scheduled every few minutes: queues each account whose sync interval (hourly by default) passed."""
    from providers.services import vendor_accounts_sync_due

    vendor_accounts_sync_due(now=timezone.now())

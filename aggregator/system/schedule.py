"""Default periodic tasks. Created once (after migrate) in django-celery-beat's tables; operators
then edit, disable or re-time them in the admin, and their changes are kept."""

from __future__ import annotations

from typing import Any

# name -> (task, every N seconds)
DEFAULT_SCHEDULE: dict[str, tuple[str, int]] = {
    "Worker heartbeat": ("aggregator.system.heartbeat_periodic", 5 * 60),
    "Sync vendor accounts that are due": ("providers.tasks.sync_due_accounts", 5 * 60),
    "Settle vendor accounts": ("billing.ledger.tasks.settle_all", 24 * 60 * 60),
    "Expire vendor credits": ("billing.ledger.tasks.expire_credits", 60 * 60),
    "Evaluate alerts": ("billing.alerts.tasks.evaluate_all", 60 * 60),
    "Import ECB FX rates file": ("billing.fx.tasks.fx_rates_import_file", 60 * 60),
    "Process stored payment webhooks again": ("billing.payments.tasks.webhook_events_retry", 5 * 60),
    "Ask the gateways about payments stuck in processing": ("billing.payments.tasks.payments_reconcile", 30 * 60),
    "Retry due top-ups": ("billing.topups.tasks.retry_due", 5 * 60),
    "Run due dunning steps": ("billing.payments.dunning.tasks.run_due", 60 * 60),
    "Finalize reviewed invoice drafts": ("billing.invoicing.tasks.finalize_reviewed", 60 * 60),
}

# name -> (task, crontab fields: minute, hour, day of month), in UTC
DEFAULT_CRONTABS: dict[str, tuple[str, str, str, str]] = {
    "Close last month's invoices": ("billing.invoicing.tasks.close_period_all", "0", "3", "1"),
}


def ensure_default_schedule(**_: Any) -> None:
    from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

    for name, (task, seconds) in DEFAULT_SCHEDULE.items():
        if PeriodicTask.objects.filter(name=name).exists():
            continue
        interval, _created = IntervalSchedule.objects.get_or_create(every=seconds, period=IntervalSchedule.SECONDS)
        PeriodicTask.objects.create(name=name, task=task, interval=interval)
    for name, (task, minute, hour, day) in DEFAULT_CRONTABS.items():
        if PeriodicTask.objects.filter(name=name).exists():
            continue
        crontab, _created = CrontabSchedule.objects.get_or_create(
            minute=minute, hour=hour, day_of_month=day, month_of_year="*", day_of_week="*", timezone="UTC"
        )
        PeriodicTask.objects.create(name=name, task=task, crontab=crontab)

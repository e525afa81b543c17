"""Envelopes: take ids, call one service. Safe to run twice (the services decide under row locks).
They run on the payments queue (``task_routes``: ``billing.payments.*``)."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone


@shared_task(name="billing.payments.dunning.tasks.run_due")
def dunning_run_due_task() -> None:
    """Every hour: open cases for overdue invoices and take every dunning step that is due."""
    from billing.payments.dunning.services import dunning_run_due

    dunning_run_due(now=timezone.now())


@shared_task(name="billing.payments.dunning.tasks.case_step")
def dunning_case_step_task(case_id: int) -> None:
    """Take one case's step now if it is due (e.g. from the operator console)."""
    from billing.payments.dunning.services import dunning_case_step

    dunning_case_step(case_id=case_id, now=timezone.now())

"""Envelopes: take ids, call one service. Both are safe to run twice (the services check the
event's state under a lock). They belong on the payments queue (``task_routes``: ``billing.payments.*``)."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from billing.payments.gateways.base import PaymentConfigurationError, PaymentTemporaryFailure

# Tasks that call a gateway: retried with back-off while it is unreachable or misconfigured.
GATEWAY_RETRY = {
    "autoretry_for": (PaymentTemporaryFailure, PaymentConfigurationError),
    "retry_backoff": 60,
    "retry_backoff_max": 3600,
    "max_retries": 10,
}


@shared_task(name="billing.payments.tasks.webhook_event_process")
def webhook_event_process_task(webhook_event_id: int) -> None:
    """Apply one stored gateway event (queued when a gateway delivers again an event whose processing failed)."""
    from billing.payments.services import webhook_event_process

    webhook_event_process(webhook_event_id=webhook_event_id)


@shared_task(name="billing.payments.tasks.webhook_events_drain")
def webhook_events_drain_task() -> None:
    """Apply every stored event still ``received``, oldest first (queued at most once a second by
    the webhook views, ``webhook_events_drain_schedule``)."""
    from billing.payments.services import webhook_events_drain

    webhook_events_drain()


@shared_task(name="billing.payments.tasks.webhook_events_retry")
def webhook_events_retry_task() -> None:
    """Every few minutes: events whose processing failed, or whose task was lost, are processed again."""
    from billing.payments.services import webhook_events_retry

    webhook_events_retry(now=timezone.now())


@shared_task(name="billing.payments.tasks.payments_reconcile")
def payments_reconcile_task() -> None:
    """Every half hour: Stripe and PayPal payments still processing an hour after their last change
    are looked up at the gateway and applied as their events would be."""
    from billing.payments.reconcile import payments_reconcile, paypal_payments_reconcile

    now = timezone.now()
    payments_reconcile(now=now)
    paypal_payments_reconcile(now=now)


@shared_task(name="billing.payments.tasks.invoice_open_attempts_close", **GATEWAY_RETRY)
def invoice_open_attempts_close_task(invoice_id: int) -> None:
    """Once a payment settled the invoice, close its other open attempts (queued after that
    payment's commit); retried with back-off while Stripe is unreachable or misconfigured."""
    from billing.payments.attempts import invoice_open_attempts_close

    invoice_open_attempts_close(invoice_id=invoice_id)


@shared_task(name="billing.payments.tasks.credit_note_refund", **GATEWAY_RETRY)
def credit_note_refund_task(credit_note_id: int) -> None:
    """Pay back what a credit note on a paid invoice owes the customer (queued on its issue);
    retried with back-off while the gateway is unreachable or misconfigured."""
    from billing.payments.refunds import credit_note_refund

    credit_note_refund(credit_note_id=credit_note_id)

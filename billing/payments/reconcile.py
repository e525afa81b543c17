"""Payments whose outcome never arrived: asking the gateway instead of waiting for its event.

A payment stays ``processing`` until Stripe's event says how it ended (a card the bank is still
confirming, an off-session charge whose answer was lost, a webhook endpoint that was down for longer
than Stripe retries). Until then it blocks new attempts of its invoice. Every half hour
(``payments_reconcile_task``) the Stripe payments still ``processing`` an hour after their last
change are looked up at Stripe; one that succeeded or failed there is applied as its event would
be: an event is stored for it (id ``reconcile_<pi>_<status>``) and processed through the same
handlers, locks and once-only checks (``webhook_event_process``), so the real event arriving later
changes nothing, and running this twice stores and applies nothing more. PayPal payments still
``processing`` (a pending capture) are read from their order the same way and a capture that
completed or was declined is applied once (``paypal_payment_reconcile``).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from billing.payments.gateways.base import PaymentConfigurationError, PaymentError
from billing.payments.gateways.paypal import PayPalGateway
from billing.payments.gateways.stripe import StripeGateway
from billing.payments.records import Payment, WebhookEvent

logger = logging.getLogger(__name__)

RECONCILE_AFTER = timedelta(hours=1)
RECONCILE_BATCH = 200  # payments looked up per run, oldest first
EVENT_OF_STATUS = {
    "succeeded": "payment_intent.succeeded",
    "canceled": "payment_intent.payment_failed",
    "requires_payment_method": "payment_intent.payment_failed",  # the attempt failed; the customer may retry
}


def payments_reconcile(*, now: datetime) -> list[WebhookEvent]:
    """Apply what Stripe knows about payments stuck in ``processing``; returns the events it
    stored and processed. A PaymentIntent still processing at Stripe is left for the next run."""
    from billing.payments.services import stripe_gateway, webhook_event_process
    from billing.payments.webhook_store import webhook_event_store

    stuck = Payment.objects.filter(
        gateway=StripeGateway.slug, status=Payment.Status.PROCESSING, gateway_reference__startswith="pi_",
        updated_at__lte=now - RECONCILE_AFTER,
    ).order_by("updated_at")[:RECONCILE_BATCH]  # fmt: skip
    references = list(stuck.values_list("gateway_reference", flat=True))
    if not references:
        return []
    try:
        gateway = stripe_gateway()
    except PaymentConfigurationError:
        logger.error("%d Stripe payments are processing but Stripe is not configured", len(references))
        return []
    applied = []
    for reference in references:
        try:
            intent = gateway.payment_intent_data(reference)
        except PaymentError as exc:
            logger.warning("payment %s: not reconciled: %s", reference, exc)
            continue
        event_type = EVENT_OF_STATUS.get(str(intent.get("status")))
        if event_type is None:
            continue
        event_id = f"reconcile_{reference}_{intent['status']}"
        record, created = webhook_event_store(
            gateway=StripeGateway.slug,
            event_id=event_id,
            event_type=event_type,
            payload=_event(event_id, event_type, intent, now),
        )
        if created or record.status in (WebhookEvent.Status.RECEIVED, WebhookEvent.Status.FAILED):
            applied.append(webhook_event_process(webhook_event_id=record.pk))
    return applied


def _event(event_id: str, event_type: str, intent: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The event Stripe would have sent, marked as made here."""
    if intent.get("status") == "canceled" and not intent.get("last_payment_error"):
        intent = {**intent, "last_payment_error": {"code": "canceled"}}
    return {
        "id": event_id, "object": "event", "type": event_type, "created": int(now.timestamp()),
        "livemode": bool(intent.get("livemode")), "data": {"object": intent}, "reconciled": True,
    }  # fmt: skip


def paypal_payments_reconcile(*, now: datetime) -> list[Payment]:
    """PayPal payments still ``processing`` an hour after their last change whose capture PayPal
    has since completed or declined: applied; returns them (reloaded)."""
    from billing.payments.paypal_services import paypal_payment_reconcile

    stuck = (
        Payment.objects.filter(
            gateway=PayPalGateway.slug, status=Payment.Status.PROCESSING, updated_at__lte=now - RECONCILE_AFTER
        )
        .exclude(gateway_reference="")
        .order_by("updated_at")[:RECONCILE_BATCH]
    )
    applied = []
    for payment in list(stuck):
        try:
            status = paypal_payment_reconcile(payment_id=payment.pk)
        except PaymentError as exc:
            logger.warning("PayPal payment %s: not reconciled: %s", payment.pk, exc)
            continue
        if status and status != "PENDING":
            applied.append(Payment.objects.get(pk=payment.pk))
    return applied

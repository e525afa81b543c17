"""Closing an invoice's open on-session payment attempts, so that no old tab can pay it twice.

An attempt is a ``Payment`` still ``requires_payment``: a Stripe PaymentIntent the pay page made
(its client secret may sit in a browser tab) or a PayPal order awaiting the buyer. Two moments close
them:

- before dunning charges the saved card off-session (``dunning/services.py``), and
- once the invoice has nothing left to pay because another payment settled it (a PayPal capture, a
  card payment made in another tab): ``invoice_open_attempts_close``, queued after the commit that
  recorded that payment (``invoice_open_attempts_close_task``).

A Stripe attempt is canceled at Stripe (a canceled PaymentIntent cannot be confirmed); one that
cannot be canceled because the customer is paying it right now is left alone and its own event
records it (an overpayment the operator refunds, which the invoice's balance shows). A PayPal order
needs nothing at PayPal: its capture is refused while the invoice has nothing left to pay
(``paypal_services``), so the attempt is only marked closed.
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.models import QuerySet
from django.utils.translation import gettext_noop

from billing.invoicing.models import Invoice
from billing.payments.gateways.base import PaymentError
from billing.payments.gateways.stripe import StripeGateway
from billing.payments.records import Payment

logger = logging.getLogger(__name__)

BEING_PAID = ("processing", "requires_capture", "succeeded")
# Stored in English, shown in the customer's language (the portal translates failure messages).
PAID_ANOTHER_WAY = gettext_noop("The invoice was paid another way.")


def open_attempts(invoice: Invoice) -> QuerySet[Payment]:
    """The invoice's attempts still waiting for the customer, locked (the invoice's lock first)."""
    return Payment.objects.select_for_update().filter(invoice=invoice, status=Payment.Status.REQUIRES_PAYMENT)


def payment_attempt_cancel(payment: Payment, *, message: str) -> bool:
    """Close one open attempt (the caller holds its row lock). True when it can no longer take
    money; False when it turned out to be paid or being paid (it is then marked ``processing``
    and its event will record the outcome). Raises ``PaymentError`` when Stripe cannot be asked."""
    if payment.gateway == StripeGateway.slug and payment.gateway_reference:
        from billing.payments.services import stripe_gateway

        gateway = stripe_gateway()
        try:
            gateway.payment_intent_cancel(payment.gateway_reference)
        except PaymentError:
            if gateway.payment_intent_retrieve(payment.gateway_reference).status in BEING_PAID:
                payment.status = Payment.Status.PROCESSING
                payment.save(update_fields=["status", "updated_at"])
                return False
    payment.status, payment.failure_code, payment.failure_message = Payment.Status.FAILED, "canceled", message
    payment.save(update_fields=["status", "failure_code", "failure_message", "updated_at"])
    return True


def invoice_open_attempts_close(*, invoice_id: int) -> list[Payment]:
    """Once the invoice has nothing left to pay, close its open attempts (safe to run twice: a
    closed attempt is no longer open). Returns the attempts it closed. Raises ``PaymentError`` when
    Stripe cannot be reached (the task retries)."""
    closed = []
    with transaction.atomic():
        invoice = Invoice.objects.select_for_update().get(pk=invoice_id)
        if invoice.status != Invoice.Status.VOID and invoice.balance_due > 0:
            return []  # still payable: the attempts stay usable
        for payment in open_attempts(invoice).order_by("pk"):
            if payment_attempt_cancel(payment, message=PAID_ANOTHER_WAY):
                closed.append(payment)
            else:
                logger.warning("invoice %s: attempt %s is being paid although the invoice is settled", invoice_id,
                               payment.pk)  # fmt: skip
    return closed

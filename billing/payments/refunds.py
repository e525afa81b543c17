"""Refunds that credit notes order: a credit note on an invoice already paid pays the overpaid part
back to the invoice's card payments, newest first.

``credit_note_refund`` is safe to run twice and to resume after a failure: each payment's refund is
made and recorded in its own transaction, under the credit note's row lock, with the credit note's
``amount_refunded`` updated in that same transaction; each gateway refund carries the key
``refund:<payment>:<refunded before, in minor units>``, so a retry after a crash between the
gateway's answer and our commit repeats that refund instead of making a second one. A refund the
gateway refuses stops the run with the error (the task retries later); what was refunded before it
stays recorded.
"""

from __future__ import annotations

import logging
from decimal import Decimal

from django.db import transaction

from billing.invoicing.models import CreditNote
from billing.payments.records import Payment
from billing.payments.services import payment_refund

logger = logging.getLogger(__name__)


def _refund_next(credit_note_id: int) -> Decimal | None:
    """Refund the next part of the credit note from one payment; the amount still owed after it,
    or None when no payment can take more."""
    with transaction.atomic():
        note = CreditNote.objects.select_for_update().get(pk=credit_note_id)
        left = note.refund_amount - note.amount_refunded
        if left <= 0:
            return Decimal(0)
        payment = next(
            (
                p
                for p in Payment.objects.filter(invoice_id=note.invoice_id, succeeded_at__isnull=False)
                .exclude(status=Payment.Status.DISPUTED)
                .order_by("-succeeded_at", "-id")
                if p.amount - p.amount_refunded > 0
            ),
            None,
        )
        if payment is None:
            return None
        part = min(left, payment.amount - payment.amount_refunded)
        payment_refund(payment_id=payment.pk, amount=part, reason=f"Credit note {note.number}")
        note.amount_refunded += part
        note.save(update_fields=["amount_refunded"])
        return left - part


def credit_note_refund(*, credit_note_id: int) -> CreditNote:
    """Refund what the credit note owes the customer from the invoice's succeeded payments."""
    left: Decimal | None = Decimal(1)
    while left:
        left = _refund_next(credit_note_id)
    # Each refund already updated the invoice's balance (``payment_refund``).
    note = CreditNote.objects.select_related("invoice").get(pk=credit_note_id)
    if left is None:
        logger.warning(
            "Credit note %s: %s %s could not be refunded to a card payment; refund it by bank transfer.",
            note.number,
            note.refund_amount - note.amount_refunded,
            note.invoice.currency,
        )
    return note

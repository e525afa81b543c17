"""Refunds that credit notes order: a credit note on an invoice already paid pays the overpaid part
back to the invoice's card payments, newest first.

``credit_note_refund`` is safe to run twice: the credit note's ``amount_refunded`` is written under
its row lock in the same transaction as each payment's refund, and each gateway refund carries the
key ``refund:<payment>:<refunded before, in minor units>`` (a retry after a crash repeats the same
refund instead of making a second one).
"""

from __future__ import annotations

import logging
from decimal import Decimal

from django.db import transaction

from billing.invoicing.models import CreditNote
from billing.invoicing.services import invoice_refunds_refresh
from billing.payments.records import Payment
from billing.payments.services import payment_refund

logger = logging.getLogger(__name__)


def credit_note_refund(*, credit_note_id: int) -> CreditNote:
    """Refund what the credit note owes the customer from the invoice's succeeded payments."""
    with transaction.atomic():
        note = CreditNote.objects.select_for_update().select_related("invoice").get(pk=credit_note_id)
        left = note.refund_amount - note.amount_refunded
        if left <= 0:
            return note
        payments = (
            Payment.objects.filter(invoice_id=note.invoice_id, succeeded_at__isnull=False)
            .exclude(status=Payment.Status.DISPUTED)
            .order_by("-succeeded_at", "-id")
        )
        for payment in payments:
            refundable = payment.amount - payment.amount_refunded
            if refundable <= 0:
                continue
            part = min(left, refundable)
            payment_refund(payment_id=payment.pk, amount=part, reason=f"Credit note {note.number}")
            note.amount_refunded += part
            note.save(update_fields=["amount_refunded"])
            left -= part
            if left <= 0:
                break
    if left > 0:
        logger.warning(
            "Credit note %s: %s %s could not be refunded to a card payment; refund it by bank transfer.",
            note.number,
            left,
            note.invoice.currency,
        )
    invoice_refunds_refresh(invoice_id=note.invoice_id)
    return note


def refund_left(note: CreditNote) -> Decimal:
    """What the credit note still owes the customer."""
    return max(Decimal(0), note.refund_amount - note.amount_refunded)

"""Invoices paid with PayPal (Orders v2, buyer approval by redirect) and PayPal's webhook events.

Paying works like the Stripe path (``services.py``): one ``Payment`` row per attempt with the key
``invoice:<id>:attempt:<n>`` exists before PayPal is called, and that key is the order's
``PayPal-Request-Id``, so a double click, a retry or two racing requests get the same order.

1. ``invoice_paypal_order_start``: under a lock on the invoice, the open PayPal attempt for what is
   left (or a new one); then, under the same locks, its order (created once, ``intent=CAPTURE``,
   ``invoice_id`` = our invoice number) and the link where the buyer approves it.
2. The buyer approves at PayPal and comes back to the return URL with ``token=<order id>``;
   ``invoice_paypal_order_capture`` captures it under the invoice's and the attempt's locks.
   ``INSTRUMENT_DECLINED`` sends the buyer back to PayPal to choose another funding source (same
   order); an order captured before (``ORDER_ALREADY_CAPTURED``) is read, not captured again.
3. A completed capture is applied once (``Payment.succeeded_at``), whether the return or the
   ``PAYMENT.CAPTURE.COMPLETED`` event comes first: ``invoice_payment_record`` adds the amount,
   exactly as for Stripe.

``DUPLICATE_INVOICE_ID``: PayPal refuses a second payment with an invoice number it has seen. We
then look at every order we know for the invoice and record a capture we missed (the invoice may be
paid already); when we find none, the customer is told so, operators are warned in the log, and the
next attempt carries ``<number>-<attempt>`` (PayPal's advice after a failed payment).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone

from aggregator.money import CurrencyError, currency_code, quantize
from billing.invoicing.models import Invoice
from billing.invoicing.services import InvoiceError, invoice_payment_record, invoice_refunds_refresh
from billing.payments.dunning.services import dunning_payment_failed, dunning_payment_succeeded
from billing.payments.gateways import gateway_of_type
from billing.payments.gateways.base import PaymentConfigurationError, PaymentDeclined, PaymentNeedsAction
from billing.payments.gateways.paypal import Capture, DuplicateInvoiceId, InstrumentDeclined, PayPalGateway
from billing.payments.records import Payment, WebhookEvent
from billing.payments.services import (
    PAYABLE_STATUSES,
    Handler,
    InvoiceNotPayable,
    Outcome,
    PaymentInProgress,
    _locked,
    invoice_settled_attempts_close,
    payment_charged_back,
)

logger = logging.getLogger(__name__)

PAYPAL = "paypal"
WAITING_FOR_BUYER = ("CREATED", "PAYER_ACTION_REQUIRED", "APPROVED", "SAVED")
DUPLICATE_INVOICE_ID = "duplicate_invoice_id"


class PayPalOrderUnknown(ValueError):
    """The order in the return URL is not one of this invoice's PayPal payments."""


def paypal_gateway() -> PayPalGateway:
    """The configured PayPal gateway, or ``PaymentConfigurationError``."""
    return gateway_of_type(PAYPAL, PayPalGateway)


@dataclass(frozen=True)
class PayPalCheckout:
    """Where to send the buyer to approve the payment of ``payment``."""

    payment: Payment
    order_id: str
    approve_url: str


@dataclass(frozen=True)
class PayPalReturn:
    """What the buyer's return from PayPal came to. ``approve_again``: send them to ``approve_url``."""

    outcome: Literal["paid", "processing", "approve_again", "failed"]
    payment: Payment
    message: str = ""
    approve_url: str = ""


# --- Paying an invoice --------------------------------------------------------------------------


def invoice_paypal_order_start(
    *, invoice_id: int, return_url: str, cancel_url: str, locale: str = ""
) -> PayPalCheckout:
    """The PayPal order the buyer approves to pay what is left of the invoice: the open attempt's,
    or a new attempt's. Raises ``InvoiceNotPayable``, ``PaymentInProgress``, ``DuplicateInvoiceId``
    or the gateway's ``PaymentError``."""
    gateway = paypal_gateway()
    for _ in range(4):
        payment = _attempt_open(invoice_id=invoice_id)
        checkout = _attempt_order(gateway, payment_id=payment.pk, return_url=return_url, cancel_url=cancel_url,
                                  locale=locale)  # fmt: skip
        if checkout is not None:
            return checkout
        # The attempt's order can no longer be paid (expired, another amount, captured): decide again.
    raise PaymentConfigurationError("PayPal keeps refusing the invoice's orders: check the PayPal account.")


def _attempt_open(*, invoice_id: int) -> Payment:
    """Under a lock on the invoice: the open PayPal attempt for what is left, or a new one."""
    with transaction.atomic():
        invoice = Invoice.objects.select_for_update().get(pk=invoice_id)
        if invoice.status not in PAYABLE_STATUSES:
            label = Invoice.Status(invoice.status).label
            raise InvoiceNotPayable(f"Invoice {invoice} is {str(label).lower()}: it cannot be paid now.")
        left = quantize(invoice.balance_due, invoice.currency, rounding="ROUND_HALF_UP")  # credit notes, refunds
        if left <= 0:
            raise InvoiceNotPayable(f"Invoice {invoice} has nothing left to pay.")
        payments = Payment.objects.filter(invoice=invoice)
        if payments.filter(status=Payment.Status.PROCESSING).exists():
            raise PaymentInProgress(
                "A payment of this invoice is being confirmed: the invoice updates when it is confirmed."
            )
        payment = payments.filter(gateway=PAYPAL, status=Payment.Status.REQUIRES_PAYMENT).order_by("-attempt").first()
        if payment is not None:
            if payment.amount != left and not payment.gateway_reference:
                payment.amount = left
                payment.save(update_fields=["amount", "updated_at"])
            return payment
        # Attempts are numbered across gateways: the key is unique for the invoice, not per gateway.
        number = (payments.aggregate(last=Max("attempt"))["last"] or 0) + 1
        return Payment.objects.create(
            organization_id=invoice.organization_id, invoice=invoice, attempt=number, gateway=PAYPAL,
            idempotency_key=f"invoice:{invoice.pk}:attempt:{number}", amount=left, currency=invoice.currency,
            payment_method_type="paypal",
        )  # fmt: skip


def _attempt_order(
    gateway: PayPalGateway, *, payment_id: int, return_url: str, cancel_url: str, locale: str
) -> PayPalCheckout | None:
    """Under locks on the invoice and the attempt: its order, created with the attempt's key if it
    has none. None when the attempt turned out unusable (it is closed, and the caller decides again)."""
    with transaction.atomic():
        result = _attempt_order_locked(gateway, payment_id, return_url, cancel_url, locale)
    if isinstance(result, DuplicateInvoiceId):
        raise result  # once the attempt's failure is committed
    return result


def _attempt_order_locked(
    gateway: PayPalGateway, payment_id: int, return_url: str, cancel_url: str, locale: str
) -> PayPalCheckout | DuplicateInvoiceId | None:
    payment = _locked(Payment.objects.select_related("invoice").get(pk=payment_id))
    assert payment is not None and payment.invoice is not None
    if payment.status != Payment.Status.REQUIRES_PAYMENT:
        return None
    invoice = payment.invoice
    if not payment.gateway_reference:
        try:
            order = gateway.order_create(
                amount=payment.amount, currency=payment.currency, request_id=payment.idempotency_key,
                invoice_id=_paypal_invoice_id(payment), custom_id=payment.idempotency_key,
                description=f"Invoice {invoice.number}", return_url=return_url, cancel_url=cancel_url,
                locale=locale,
            )  # fmt: skip
        except DuplicateInvoiceId:
            found = _missed_captures_record(gateway, payment)
            _fail(payment, DUPLICATE_INVOICE_ID, _duplicate_message(invoice, found))
            if found:
                return None  # recorded: the invoice is paid, or the next attempt asks for what is left
            logger.error(
                "invoice %s: PayPal refused invoice_id %s as a duplicate and none of our orders has a capture "
                "for it; check the PayPal account's activity for that invoice id",
                invoice.pk, _paypal_invoice_id(payment),
            )  # fmt: skip
            return DuplicateInvoiceId(invoice.number or str(invoice.pk))
        payment.gateway_reference = order.id
        payment.save(update_fields=["gateway_reference", "updated_at"])
        return PayPalCheckout(payment, order.id, order.approve_url)
    order = gateway.order_get(payment.gateway_reference)
    if order.capture is not None:  # captured, but the answer never reached us
        _capture_apply(payment, order.capture)
        return None
    left = quantize(invoice.balance_due, invoice.currency, rounding="ROUND_HALF_UP")  # credit notes, refunds
    if order.status not in WAITING_FOR_BUYER or order.amount != left:
        reason = "expired" if order.status not in WAITING_FOR_BUYER else "amount_changed"
        _fail(payment, reason, "The PayPal payment was not completed in time; a new one was started.")
        return None
    if order.status == "APPROVED" and not order.approve_url:
        # Approved already (the buyer's return got lost): the return URL captures it.
        return PayPalCheckout(payment, order.id, _with_token(return_url, order.id))
    return PayPalCheckout(payment, order.id, order.approve_url)


def invoice_paypal_order_capture(*, invoice_id: int, order_id: str) -> PayPalReturn:
    """Capture the order the buyer approved (their return from PayPal) and apply it once. Raises
    ``PayPalOrderUnknown``, or the gateway's ``PaymentTemporaryFailure`` / ``PaymentConfigurationError``
    (the attempt stays open: the buyer can come back to the same link)."""
    found = Payment.objects.filter(gateway=PAYPAL, gateway_reference=order_id, invoice_id=invoice_id).first()
    if found is None or not order_id:
        raise PayPalOrderUnknown("This PayPal payment is not one of this invoice's: start the payment again.")
    gateway = paypal_gateway()
    with transaction.atomic():
        payment = _locked(found)
        assert payment is not None
        if payment.succeeded_at is not None or payment.status == Payment.Status.PROCESSING:
            return _return_of(payment)
        if payment.status == Payment.Status.FAILED:
            return PayPalReturn("failed", payment, payment.failure_message)
        try:
            order = gateway.order_capture(order_id)
        except InstrumentDeclined as exc:
            payment.failure_code, payment.failure_message = exc.decline_code, exc.message
            payment.save(update_fields=["failure_code", "failure_message", "updated_at"])
            return PayPalReturn("approve_again", payment, exc.message, exc.approve_url)
        except PaymentNeedsAction as exc:  # ORDER_NOT_APPROVED
            return PayPalReturn("approve_again", payment, exc.message, exc.action_url)
        except DuplicateInvoiceId:
            assert payment.invoice is not None
            recorded = _missed_captures_record(gateway, payment)
            _fail(payment, DUPLICATE_INVOICE_ID, _duplicate_message(payment.invoice, recorded))
            # Recorded: the invoice was paid by an order whose capture we had missed.
            return PayPalReturn("paid" if recorded else "failed", payment, payment.failure_message)
        except PaymentDeclined as exc:
            _fail(payment, exc.decline_code, exc.message)
            return PayPalReturn("failed", payment, exc.message)
        if order.capture is None:
            return PayPalReturn("approve_again", payment, "Approve the payment at PayPal to finish paying.",
                                order.approve_url)  # fmt: skip
        _capture_apply(payment, order.capture)
        return _return_of(payment)


def _return_of(payment: Payment) -> PayPalReturn:
    if payment.succeeded_at is not None:
        return PayPalReturn("paid", payment)
    if payment.status == Payment.Status.PROCESSING:
        return PayPalReturn(
            "processing", payment, "PayPal is reviewing the payment: the invoice updates when PayPal completes it."
        )
    return PayPalReturn("failed", payment, payment.failure_message)


def _paypal_invoice_id(payment: Payment) -> str:
    """Our invoice number, unless PayPal already has it from an earlier PayPal payment of the invoice
    (a partial payment, or one it refused as a duplicate): then ``<number>-<attempt>``."""
    assert payment.invoice is not None
    number = payment.invoice.number or f"invoice-{payment.invoice.pk}"
    earlier = Payment.objects.filter(invoice=payment.invoice, gateway=PAYPAL, attempt__lt=payment.attempt)
    if earlier.filter(Q(succeeded_at__isnull=False) | Q(failure_code=DUPLICATE_INVOICE_ID)).exists():
        return f"{number}-{payment.attempt}"
    return number


def _missed_captures_record(gateway: PayPalGateway, payment: Payment) -> int:
    """After ``DUPLICATE_INVOICE_ID``: record the completed captures of the invoice's other orders we
    know of but never recorded. Returns how many were recorded."""
    others = (
        Payment.objects.filter(invoice=payment.invoice, gateway=PAYPAL, succeeded_at__isnull=True)
        .exclude(pk=payment.pk)
        .exclude(gateway_reference="")
        .order_by("attempt")
    )
    recorded = 0
    for other in others:
        order = gateway.order_get(other.gateway_reference)
        capture = order.capture
        if capture is not None and capture.status in ("COMPLETED", "REFUNDED", "PARTIALLY_REFUNDED"):
            locked = Payment.objects.select_for_update().get(pk=other.pk)
            _capture_apply(locked, capture)
            recorded += 1
    return recorded


def _duplicate_message(invoice: Invoice, recorded: int) -> str:
    if recorded:
        return f"PayPal had already received a payment for invoice {invoice.number}: it is now shown on the invoice."
    return (
        f"PayPal already has a payment under invoice number {invoice.number}, so it refused this one; nothing "
        "was charged. If you already paid this invoice with PayPal, we will match it. Otherwise start the "
        "payment again: it will carry a new reference."
    )


def paypal_payment_reconcile(*, payment_id: int) -> str:
    """A PayPal payment still ``processing`` (a pending capture whose outcome never arrived): read
    its order at PayPal and apply a capture that completed or was declined, as its event would
    (``_capture_apply``: money applied once). Returns the capture's status ("" when there is none
    yet). Raises the gateway's errors (the caller logs them and tries again on its next run)."""
    payment = Payment.objects.get(pk=payment_id)
    order = gateway_of_type(PAYPAL, PayPalGateway).order_get(payment.gateway_reference)
    capture = order.capture
    if capture is None or capture.status == "PENDING":
        return capture.status if capture else ""
    with transaction.atomic():
        locked = _locked(payment)
        if locked is not None and locked.status == Payment.Status.PROCESSING:
            _capture_apply(locked, capture)
    return capture.status


def _fail(payment: Payment, code: str, message: str) -> None:
    payment.status, payment.failure_code, payment.failure_message = Payment.Status.FAILED, code[:60], message
    payment.save(update_fields=["status", "failure_code", "failure_message", "updated_at"])


def _with_token(url: str, order_id: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}token={order_id}"


# --- Applying a capture (return and webhook alike) ----------------------------------------------


def _capture_apply(payment: Payment, capture: Capture) -> str:
    """Record what a capture says on the (locked) payment; money is applied to the invoice once.
    Returns a note for operators ("" when all went well)."""
    note = ""
    if capture.id:
        payment.charge_reference = capture.id
    payment.payment_method_type = "paypal"
    if capture.status in ("COMPLETED", "REFUNDED", "PARTIALLY_REFUNDED"):
        if payment.succeeded_at is None:
            payment.amount = _received(capture, payment)
            payment.succeeded_at = timezone.now()
            if payment.invoice_id is not None:
                try:
                    invoice = invoice_payment_record(invoice_id=payment.invoice_id, amount=payment.amount)
                    invoice_settled_attempts_close(invoice)
                except InvoiceError as exc:
                    note = f"Paid, but not applied to the invoice: {exc} Refund it, or apply it by hand."
                    logger.error("payment %s: %s", payment.pk, note)
        # A funding source declined before the buyer chose another one: paid wins, the failure goes.
        if payment.advance(Payment.Status.SUCCEEDED):
            payment.failure_code, payment.failure_message = "", ""
        payment.save()
        if payment.invoice_id is not None:
            dunning_payment_succeeded(payment=payment, now=timezone.now())  # closes the invoice's dunning case
        return note
    if capture.status == "PENDING":
        if payment.status == Payment.Status.REQUIRES_PAYMENT:
            payment.status = Payment.Status.PROCESSING
    elif payment.succeeded_at is None:  # DECLINED, FAILED: the money did not move
        payment.status, payment.failure_code = Payment.Status.FAILED, "capture_declined"
        payment.failure_message = "PayPal declined the payment. Pay again with another funding source, or by card."
        payment.save()
        if payment.invoice_id is not None:
            dunning_payment_failed(payment=payment, now=timezone.now())  # opens or advances the dunning case
        return note
    payment.save()
    return note


def _received(capture: Capture, payment: Payment) -> Decimal:
    try:
        if capture.amount > 0 and currency_code(capture.currency or payment.currency) == payment.currency:
            return quantize(capture.amount, payment.currency, rounding="ROUND_HALF_UP")
    except CurrencyError:
        pass
    return payment.amount


# --- Webhook events -------------------------------------------------------------------------------


def _payment_of_capture(resource: Mapping[str, Any]) -> Payment | None:
    """The payment of a capture: by capture id, by its order, or by our key in ``custom_id``."""
    capture_id = str(resource.get("id") or "")
    order_id = str(((resource.get("supplementary_data") or {}).get("related_ids") or {}).get("order_id") or "")
    query = Q(charge_reference=capture_id) if capture_id else Q(pk__in=[])
    if order_id:
        query |= Q(gateway_reference=order_id)
    custom_id = str(resource.get("custom_id") or "")
    if custom_id.startswith("invoice:"):
        query |= Q(idempotency_key=custom_id)
    return _locked(Payment.objects.filter(query, gateway=PAYPAL).order_by("-attempt").first())


def _capture_of(resource: Mapping[str, Any], status: str) -> Capture:
    money = resource.get("amount") or {}
    try:
        amount = Decimal(str(money.get("value")))
    except ArithmeticError:
        amount = Decimal(0)
    return Capture(id=str(resource.get("id") or ""), status=status, amount=amount,
                   currency=str(money.get("currency_code") or ""))  # fmt: skip


def _on_capture(status: str) -> Handler:
    def handle(gateway: str, resource: Mapping[str, Any], details: Mapping[str, Any] | None) -> Outcome:
        payment = _payment_of_capture(resource)
        if payment is None:
            return WebhookEvent.Status.IGNORED, "The capture is not one of our PayPal payments."
        if status == "DECLINED" and payment.succeeded_at is not None:
            return WebhookEvent.Status.IGNORED, "The payment already succeeded: a late decline changes nothing."
        note = _capture_apply(payment, _capture_of(resource, status))
        return WebhookEvent.Status.PROCESSED, note

    return handle


def _on_refunded(gateway: str, refund: Mapping[str, Any], details: Mapping[str, Any] | None) -> Outcome:
    up = next((str(link.get("href")) for link in refund.get("links") or [] if link.get("rel") == "up"), "")
    capture_id = up.rstrip("/").rsplit("/", 1)[-1] if "/captures/" in up else ""
    payment = (
        _locked(Payment.objects.filter(gateway=PAYPAL, charge_reference=capture_id).first()) if capture_id else None
    )
    if payment is None:
        return WebhookEvent.Status.IGNORED, "The refunded capture is not one of our PayPal payments."
    # The total refunded so far when PayPal gives it (order-proof), else this refund added.
    total = ((refund.get("seller_payable_breakdown") or {}).get("total_refunded_amount") or {}).get("value")
    this_refund = (refund.get("amount") or {}).get("value")
    try:
        refunded = Decimal(str(total)) if total is not None else payment.amount_refunded + Decimal(str(this_refund))
    except ArithmeticError:
        return WebhookEvent.Status.IGNORED, "The refund carries no amount."
    payment.amount_refunded = max(
        payment.amount_refunded, quantize(refunded, payment.currency, rounding="ROUND_HALF_UP")
    )
    if payment.amount_refunded >= payment.amount and payment.advance(Payment.Status.REFUNDED):
        payment.refunded_at = timezone.now()
    payment.save()
    if payment.invoice_id is not None:
        invoice_refunds_refresh(invoice_id=payment.invoice_id)  # a refund without a credit note is owed again
    return WebhookEvent.Status.PROCESSED, ""


def _dispute_payment(dispute: Mapping[str, Any]) -> Payment | None:
    """The (locked) PayPal payment whose capture the dispute names, recorded as disputed."""
    captures = [str(t.get("seller_transaction_id") or "") for t in dispute.get("disputed_transactions") or []]
    captures = [c for c in captures if c]
    found = Payment.objects.filter(gateway=PAYPAL, charge_reference__in=captures).first() if captures else None
    payment = _locked(found)
    if payment is None:
        return None
    if payment.advance(Payment.Status.DISPUTED):
        payment.disputed_at = timezone.now()
    payment.dispute_reason = str(dispute.get("reason") or "")[:60]
    outcome = (dispute.get("dispute_outcome") or {}).get("outcome_code")  # once resolved, how
    payment.dispute_status = str(outcome or dispute.get("status") or "")[:30]
    payment.save()
    return payment


def _on_dispute_created(gateway: str, dispute: Mapping[str, Any], details: Mapping[str, Any] | None) -> Outcome:
    if _dispute_payment(dispute) is None:
        return WebhookEvent.Status.IGNORED, "The disputed transaction is not one of our PayPal payments."
    return WebhookEvent.Status.PROCESSED, ""


def _on_dispute_resolved(gateway: str, dispute: Mapping[str, Any], details: Mapping[str, Any] | None) -> Outcome:
    """Resolved in the buyer's favour: the amount PayPal gave back to the buyer (``dispute_outcome.
    amount_refunded``, else the disputed amount) is owed on the invoice again, like a lost Stripe
    dispute. Any other outcome leaves the money where it is."""
    payment = _dispute_payment(dispute)
    if payment is None:
        return WebhookEvent.Status.IGNORED, "The disputed transaction is not one of our PayPal payments."
    outcome = dispute.get("dispute_outcome") or {}
    taken = Decimal(0)
    if outcome.get("outcome_code") == "RESOLVED_BUYER_FAVOUR":
        money = outcome.get("amount_refunded") or dispute.get("dispute_amount") or {}
        try:
            taken = quantize(Decimal(str(money.get("value"))), payment.currency, rounding="ROUND_HALF_UP")
        except ArithmeticError:
            return WebhookEvent.Status.IGNORED, "The resolved dispute carries no amount."
    payment_charged_back(payment, taken)
    return WebhookEvent.Status.PROCESSED, ""


PAYPAL_HANDLERS: dict[str, Handler] = {
    "PAYMENT.CAPTURE.COMPLETED": _on_capture("COMPLETED"),
    "PAYMENT.CAPTURE.PENDING": _on_capture("PENDING"),
    "PAYMENT.CAPTURE.DENIED": _on_capture("DECLINED"),
    "PAYMENT.CAPTURE.DECLINED": _on_capture("DECLINED"),
    "PAYMENT.CAPTURE.REFUNDED": _on_refunded,
    "CUSTOMER.DISPUTE.CREATED": _on_dispute_created,
    "CUSTOMER.DISPUTE.UPDATED": _on_dispute_created,
    "CUSTOMER.DISPUTE.RESOLVED": _on_dispute_resolved,
}

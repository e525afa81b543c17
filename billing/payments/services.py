"""Card payments through Stripe: invoice PaymentIntents, refunds, and gateway webhook events
stored once and processed by a task.

Invoice payment (on-session, Stripe.js ``confirmCardPayment``): ``invoice_payment_intent_create``
returns the client secret of the invoice's open PaymentIntent, making it if needed, for what is
left to pay. Two steps, each under a lock:

1. under a lock on the invoice: find the open attempt (``Payment``, status ``requires_payment``)
   or create the next one with its key ``invoice:<id>:attempt:<n>``, and commit;
2. under a lock on that attempt: create its PaymentIntent with the attempt's key (or fetch the one
   it has) and store the PaymentIntent id.

A request or task that runs twice, or two workers racing, therefore get the same PaymentIntent
even from a server that ignores idempotency keys (localstripe). Creating a PaymentIntent moves no
money; the invoice is paid only by a verified ``payment_intent.succeeded`` event.

Webhooks: the view verifies the signature, stores the event once by id
(``webhook_event_receive``) and, after commit, makes sure one ``webhook_events_drain`` task is
queued for the next second; that task processes every stored event still ``received``. Processing is
idempotent and order-insensitive: a payment never moves back (a late ``payment_failed`` after
``succeeded`` changes nothing), and a success is applied to its invoice or top-up exactly once
(``Payment.succeeded_at``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django.db.models import F, Max
from django.utils import timezone

from aggregator.money import CurrencyError, currency_code, from_minor, quantize, to_minor
from aggregator.tenancy.models import Organization
from aggregator.tenancy.services import audit_record
from billing.invoicing.models import Invoice
from billing.invoicing.services import InvoiceError, invoice_payment_record, invoice_refunds_refresh
from billing.payments.dunning.services import dunning_payment_failed, dunning_payment_succeeded
from billing.payments.gateways import gateway_for, gateway_of_type
from billing.payments.gateways.base import (
    PaymentConfigurationError,
    PaymentError,
    RefundRequest,
    decline_message,
)
from billing.payments.gateways.stripe import Intent, StripeGateway, js_url, publishable_key
from billing.payments.models import PaymentMethod
from billing.payments.records import Payment, WebhookEvent
from billing.payments.tasks import (
    invoice_open_attempts_close_task,
    webhook_event_process_task,
    webhook_events_drain_task,
)
from billing.payments.webhook_store import webhook_event_store
from billing.topups.models import TopUp
from billing.topups.services import top_up_payment_confirm, top_up_payment_fail

logger = logging.getLogger(__name__)

STRIPE = "stripe"
PAYABLE_STATUSES = (Invoice.Status.OPEN, Invoice.Status.PARTIALLY_PAID, Invoice.Status.UNCOLLECTIBLE)
# A stored event still unprocessed after this (its task failed or was lost) is processed again.
WEBHOOK_RETRY_AFTER = timedelta(minutes=5)
WEBHOOK_MAX_ATTEMPTS = 10
# New events are processed by one drain task at most this many seconds after the first of a burst
# (``webhook_events_drain_schedule``).
WEBHOOK_DRAIN_DELAY = 1.0
WEBHOOK_DRAIN_MARGIN = 0.2
WEBHOOK_DRAIN_KEY = "payments:webhook-drain"


class InvoiceNotPayable(ValueError):
    """The invoice takes no card payment now (draft, void, paid); the message says why."""


class PaymentInProgress(ValueError):
    """A payment of the invoice is being confirmed: wait for it instead of paying again."""


class PaymentNotRefundable(ValueError):
    """The payment cannot be refunded (not succeeded, disputed, or more than is left)."""


def stripe_gateway() -> StripeGateway:
    """The configured Stripe gateway, or ``PaymentConfigurationError``."""
    return gateway_of_type(STRIPE, StripeGateway)


# --- Invoice payment ----------------------------------------------------------------------------


@dataclass(frozen=True)
class InvoicePaymentIntent:
    """What the portal needs to pay with Stripe.js: ``stripe.confirmCardPayment(client_secret, …)``."""

    payment: Payment
    payment_intent: str
    client_secret: str
    publishable_key: str
    amount: Decimal
    currency: str
    js_url: str


def invoice_payment_intent_create(*, invoice_id: int) -> InvoicePaymentIntent:
    """The PaymentIntent the customer confirms to pay what is left of the invoice: the open
    attempt's (its amount brought up to date), or a new attempt's. Raises ``InvoiceNotPayable``,
    ``PaymentInProgress``, or the gateway's ``PaymentError``."""
    gateway = stripe_gateway()
    for _ in range(3):
        payment = _invoice_attempt_open(invoice_id=invoice_id)
        intent, in_progress = _invoice_attempt_intent(gateway, payment_id=payment.pk)
        if in_progress:
            raise PaymentInProgress(
                "A payment of this invoice is being confirmed: the invoice updates when the bank confirms it."
            )
        if intent is not None:
            payment.refresh_from_db()
            return InvoicePaymentIntent(
                payment=payment, payment_intent=intent.id, client_secret=intent.client_secret,
                publishable_key=publishable_key(), amount=intent.amount, currency=intent.currency, js_url=js_url(),
            )  # fmt: skip
        # The attempt's PaymentIntent can no longer be paid (canceled at Stripe): the next loop makes a new one.
    raise PaymentConfigurationError("Stripe keeps canceling the invoice's PaymentIntents: check the Stripe account.")


def _invoice_attempt_open(*, invoice_id: int) -> Payment:
    """Step 1, under a lock on the invoice: the open attempt for what is left, or a new one."""
    with transaction.atomic():
        invoice = Invoice.objects.select_for_update().get(pk=invoice_id)
        if invoice.status not in PAYABLE_STATUSES:
            label = Invoice.Status(invoice.status).label
            raise InvoiceNotPayable(f"Invoice {invoice} is {str(label).lower()}: it cannot be paid by card.")
        left = quantize(invoice.balance_due, invoice.currency, rounding="ROUND_HALF_UP")  # credit notes, refunds
        if left <= 0:
            raise InvoiceNotPayable(f"Invoice {invoice} has nothing left to pay.")
        attempts = Payment.objects.filter(invoice=invoice, gateway=STRIPE)
        if attempts.filter(status=Payment.Status.PROCESSING).exists():
            raise PaymentInProgress(
                "A payment of this invoice is being confirmed: the invoice updates when the bank confirms it."
            )
        payment = attempts.filter(status=Payment.Status.REQUIRES_PAYMENT).order_by("-attempt").first()
        if payment is not None:
            if payment.amount != left:
                payment.amount = left
                payment.save(update_fields=["amount", "updated_at"])
            return payment
        # Numbered across gateways (PayPal too): the key is unique per invoice, not per gateway.
        number = (Payment.objects.filter(invoice=invoice).aggregate(last=Max("attempt"))["last"] or 0) + 1
        return Payment.objects.create(
            organization_id=invoice.organization_id, invoice=invoice, attempt=number, gateway=STRIPE,
            idempotency_key=f"invoice:{invoice.pk}:attempt:{number}", amount=left, currency=invoice.currency,
        )  # fmt: skip


def _invoice_attempt_intent(gateway: StripeGateway, *, payment_id: int) -> tuple[Intent | None, bool]:
    """Step 2, under a lock on the attempt: its PaymentIntent, created with the attempt's key if it
    has none. Returns (intent, in_progress); (None, False) when the attempt turned out unusable."""
    with transaction.atomic():
        payment = Payment.objects.select_for_update(of=("self",)).select_related("invoice").get(pk=payment_id)
        if payment.status != Payment.Status.REQUIRES_PAYMENT:
            return None, False  # an event moved it on since step 1: step 1 decides again
        assert payment.invoice is not None
        if not payment.gateway_reference:
            _previous_attempt_cancel(gateway, payment)
            intent = gateway.payment_intent_create(
                amount=payment.amount, currency=payment.currency, idempotency_key=payment.idempotency_key,
                metadata={"invoice_id": str(payment.invoice_id), "invoice_number": payment.invoice.number or "",
                          "attempt": str(payment.attempt), "payment_id": str(payment.pk),
                          "organization": str(payment.organization_id)},
                customer_reference=_stripe_customer_of(payment.organization_id),
                description=f"Invoice {payment.invoice.number}",
            )  # fmt: skip
            payment.gateway_reference = intent.id
            payment.save(update_fields=["gateway_reference", "updated_at"])
            return intent, False
        intent = gateway.payment_intent_retrieve(payment.gateway_reference)
        if intent.status in ("processing", "requires_capture", "succeeded"):
            # Paid or being paid; its event is on the way.
            payment.status = Payment.Status.PROCESSING
            payment.save(update_fields=["status", "updated_at"])
            return None, True
        if not intent.reusable:
            payment.status, payment.failure_code = Payment.Status.FAILED, intent.status
            payment.failure_message = "The payment was canceled before it was completed."
            payment.save(update_fields=["status", "failure_code", "failure_message", "updated_at"])
            return None, False
        if intent.amount != payment.amount:
            intent = gateway.payment_intent_update_amount(intent.id, amount=payment.amount, currency=payment.currency)
        return intent, False


def _previous_attempt_cancel(gateway: StripeGateway, payment: Payment) -> None:
    """A failed attempt's PaymentIntent could still be confirmed from an old browser tab: cancel it
    before making the next, so one invoice is not paid twice. Best effort."""
    previous = (
        Payment.objects.filter(invoice=payment.invoice, gateway=STRIPE, status=Payment.Status.FAILED)
        .exclude(gateway_reference="")
        .exclude(failure_code="canceled")
        .order_by("-attempt")
        .first()
    )
    if previous is None:
        return
    try:
        gateway.payment_intent_cancel(previous.gateway_reference)
    except PaymentError as exc:
        logger.info("payment %s: PaymentIntent %s not canceled: %s", previous.pk, previous.gateway_reference, exc)
    Payment.objects.filter(pk=previous.pk).update(failure_code="canceled", updated_at=timezone.now())


def _stripe_customer_of(organization_id: int) -> str:
    """The Stripe customer of the organization's saved Stripe payment methods, if any."""
    return (
        PaymentMethod.objects.filter(organization_id=organization_id, gateway=STRIPE)
        .exclude(customer_reference="")
        .order_by("-is_default", "-created_at")
        .values_list("customer_reference", flat=True)
        .first()
    ) or ""


def stripe_customer_reference(*, organization: Organization) -> str:
    """The organization's Stripe customer (``cus_…``), created on first use; payment methods are
    saved on it (``payment_method_save(..., customer_reference=...)``)."""
    existing = _stripe_customer_of(organization.pk)
    if existing:
        return existing
    return stripe_gateway().customer_create(
        name=organization.legal_name or organization.name, email=organization.billing_email,
        metadata={"organization": str(organization.pk), "slug": organization.slug},
        idempotency_key=f"customer:organization:{organization.pk}",
    )  # fmt: skip


def payment_refund(*, payment_id: int, amount: Decimal | None = None, reason: str = "") -> Payment:
    """Refund (part of) a succeeded payment at the gateway and record it. ``amount`` defaults to
    what is not refunded yet. Crediting the invoice (credit note) is the caller's decision."""
    with transaction.atomic():
        payment = Payment.objects.select_for_update().get(pk=payment_id)
        if payment.succeeded_at is None or payment.status == Payment.Status.DISPUTED:
            raise PaymentNotRefundable(f"Payment {payment.pk} is {payment.status}: it cannot be refunded.")
        left = payment.amount - payment.amount_refunded
        amount = left if amount is None else quantize(amount, payment.currency, rounding="ROUND_HALF_UP")
        if amount <= 0 or amount > left:
            raise PaymentNotRefundable(f"Refund more than 0 and at most {left} {payment.currency}.")
        # One key per refund: a retry after a crash repeats it, a later refund gets the next key.
        before = to_minor(payment.amount_refunded, payment.currency, rounding="ROUND_HALF_UP")
        result = gateway_for(payment.gateway).refund(
            RefundRequest(charge_reference=payment.gateway_reference, amount=amount, currency=payment.currency,
                          idempotency_key=f"refund:{payment.pk}:{before}", reason=reason)
        )  # fmt: skip
        payment.amount_refunded += result.amount
        if payment.amount_refunded >= payment.amount and payment.advance(Payment.Status.REFUNDED):
            payment.refunded_at = timezone.now()
        payment.save()
        if payment.invoice_id is not None:
            invoice_refunds_refresh(invoice_id=payment.invoice_id)
        return payment


# --- Webhook events -----------------------------------------------------------------------------


def webhook_event_receive(*, gateway: str, body: bytes, headers: Mapping[str, str]) -> tuple[WebhookEvent, bool]:
    """Verify and store a webhook delivery once by event id, and have it processed after commit
    (``webhook_events_drain_schedule``). Returns (event, created); a duplicate delivery is not
    processed again, except one of an event whose processing failed, which is queued at once.
    Raises ``WebhookInvalid`` (store nothing, answer 400) or ``PaymentConfigurationError``."""
    event = gateway_for(gateway).parse_webhook(body, headers)
    record, created = webhook_event_store(gateway=gateway, event_id=event.id, event_type=event.type,
                                          payload=event.payload, payload_json=event.payload_json)  # fmt: skip
    if created:
        transaction.on_commit(webhook_events_drain_schedule)
    elif record.status == WebhookEvent.Status.FAILED:
        webhook_event_process_task.delay_on_commit(record.pk)
    return record, created


class _DrainQueued:
    """What this process knows: a drain is queued that will see every event committed before
    ``until`` (``time.time()``), so events until then need no trigger at all. ``lock``: one thread
    of the process asks the cache at a time; the others then find ``until`` renewed."""

    until = 0.0
    lock = threading.RLock()  # re-entrant: an eager drain (tasks run at once) resets ``until`` inside


_drain_queued = _DrainQueued()


def webhook_events_drain_schedule() -> None:
    """Make sure a ``webhook_events_drain`` task will run after this event was committed (call it
    then): the stored rows are the queue, so a burst costs one Celery message a second, not one
    per event. The cache (Redis in production, shared by all processes) holds the start time of
    the queued drain for ``WEBHOOK_DRAIN_DELAY - WEBHOOK_DRAIN_MARGIN`` seconds; the process that
    adds it queues the drain for that time, the others read it and, like the first, send nothing
    more until ``WEBHOOK_DRAIN_MARGIN`` before it (the margin allows for clock skew between web
    and worker hosts). While the key exists its drain is yet to start, so an event committed then
    is in its list. A cache that cannot be reached queues the task anyway."""
    now = time.time()  # after this event's commit
    if now < _drain_queued.until:
        return
    with _drain_queued.lock:
        if now < _drain_queued.until:  # renewed by another thread meanwhile
            return
        _drain_schedule(now)


def _drain_schedule(now: float) -> None:
    start = now + WEBHOOK_DRAIN_DELAY
    pending: Any = None
    try:
        added = cache.add(WEBHOOK_DRAIN_KEY, start, timeout=WEBHOOK_DRAIN_DELAY - WEBHOOK_DRAIN_MARGIN)
        if not added:
            pending = cache.get(WEBHOOK_DRAIN_KEY)
    except Exception:
        logger.warning("cache unreachable: webhook drain queued without coalescing", exc_info=True)
        added = True
    if added:
        _drain_queued.until = start - WEBHOOK_DRAIN_MARGIN  # before queueing: an eager drain resets it
        try:
            webhook_events_drain_task.apply_async(eta=datetime.fromtimestamp(start, tz=UTC))
        except Exception:
            _drain_queued.until = 0.0
            cache.delete(WEBHOOK_DRAIN_KEY)
            raise
    elif isinstance(pending, float):
        _drain_queued.until = pending - WEBHOOK_DRAIN_MARGIN


def webhook_events_drain() -> list[WebhookEvent]:
    """Process every ``received`` event, oldest first, each under its own lock and state check
    (``webhook_event_process``), so drains running side by side share the work and never apply an
    event twice. The trigger is cleared first, so an event committed from then on queues the next
    drain (needed when tasks run at once, in the calling process: ``CELERY_TASK_ALWAYS_EAGER``)."""
    _drain_queued.until = 0.0
    try:
        cache.delete(WEBHOOK_DRAIN_KEY)
    except Exception:
        logger.warning("cache unreachable: webhook drain trigger not cleared (it expires)", exc_info=True)
    due = WebhookEvent.objects.filter(status=WebhookEvent.Status.RECEIVED).order_by("received_at", "pk")
    return [
        webhook_event_process(webhook_event_id=pk, skip_locked=True) for pk in list(due.values_list("pk", flat=True))
    ]


Outcome = tuple[str, str]  # (WebhookEvent status, note for operators)
Handler = Callable[[str, Mapping[str, Any], Mapping[str, Any] | None], Outcome]


def webhook_event_process(*, webhook_event_id: int, skip_locked: bool = False) -> WebhookEvent:
    """Apply a stored event once. An error is recorded on the event (status ``failed``) for the
    periodic retry, not raised: the delivery was already acknowledged. ``skip_locked``: an event
    another worker is applying right now is left to it (returned as read) instead of waited for."""
    record = WebhookEvent.objects.get(pk=webhook_event_id)
    if record.status in (WebhookEvent.Status.PROCESSED, WebhookEvent.Status.IGNORED):
        return record
    try:
        handler = _handler_for(record.gateway, record.type)
        obj = _event_object(record.gateway, record.payload)
        details = _method_details(record.type, obj) if handler is not None and record.gateway == STRIPE else None
        with transaction.atomic():
            locked = WebhookEvent.objects.select_for_update(skip_locked=skip_locked).filter(pk=webhook_event_id).first()
            if locked is None:  # skipped: another worker holds it
                return record
            record = locked
            if record.status in (WebhookEvent.Status.PROCESSED, WebhookEvent.Status.IGNORED):
                return record
            status: str
            if handler is None:
                status, note = WebhookEvent.Status.IGNORED, f"No action for {record.gateway} {record.type} events."
            else:
                status, note = handler(record.gateway, obj, details)
            record.status, record.error, record.processed_at = status, note, timezone.now()
            record.attempts += 1
            record.save(update_fields=["status", "error", "processed_at", "attempts"])
            return record
    except Exception as exc:
        logger.exception("webhook event %s (%s) could not be processed", record.event_id, record.type)
        WebhookEvent.objects.filter(pk=webhook_event_id).update(
            status=WebhookEvent.Status.FAILED, error=f"{type(exc).__name__}: {exc}"[:2000], attempts=F("attempts") + 1
        )
        return WebhookEvent.objects.get(pk=webhook_event_id)


def webhook_events_retry(*, now: datetime) -> list[WebhookEvent]:
    """Process again the events that failed or whose task was lost; gives up after a few attempts
    (they stay ``failed`` in the operator console)."""
    due = WebhookEvent.objects.filter(
        status__in=[WebhookEvent.Status.RECEIVED, WebhookEvent.Status.FAILED],
        received_at__lte=now - WEBHOOK_RETRY_AFTER,
        attempts__lt=WEBHOOK_MAX_ATTEMPTS,
    ).order_by("received_at", "pk")
    return [webhook_event_process(webhook_event_id=pk) for pk in list(due.values_list("pk", flat=True))]


def _on_intent_succeeded(gateway: str, intent: Mapping[str, Any], details: Mapping[str, Any] | None) -> Outcome:
    payment = _payment_for(gateway, intent, create=True)
    if payment is None:
        return WebhookEvent.Status.IGNORED, "The PaymentIntent is not for one of our invoices or top-ups."
    _apply_details(payment, intent, details)
    note = ""
    if payment.succeeded_at is None:
        payment.amount = _received(intent, payment)
        payment.succeeded_at = timezone.now()
        if payment.invoice_id is not None:
            try:
                invoice = invoice_payment_record(invoice_id=payment.invoice_id, amount=payment.amount)
                invoice_settled_attempts_close(invoice)
            except InvoiceError as exc:
                note = f"Paid, but not applied to the invoice: {exc} Refund it, or apply it by hand."
                logger.error("payment %s: %s", payment.pk, note)
        if payment.advance(Payment.Status.SUCCEEDED):
            payment.failure_code, payment.failure_message = "", ""
        payment.save()
        if payment.top_up_id is not None:
            # Credits the ledger once, unless the charge's own answer already did.
            top_up_payment_confirm(gateway=gateway, gateway_reference=payment.gateway_reference)
    else:
        payment.save()
    if payment.invoice_id is not None:
        dunning_payment_succeeded(payment=payment, now=timezone.now())  # closes the invoice's dunning case
    return WebhookEvent.Status.PROCESSED, note


def invoice_settled_attempts_close(invoice: Invoice) -> None:
    """A payment just settled the invoice: once that commits, its other open attempts (a card
    PaymentIntent in another tab, a PayPal order) are closed so they cannot pay it again."""
    if invoice.balance_due <= 0:
        invoice_open_attempts_close_task.delay_on_commit(invoice.pk)


AUTHENTICATION_REQUIRED = "authentication_required"


def _on_intent_failed(gateway: str, intent: Mapping[str, Any], details: Mapping[str, Any] | None) -> Outcome:
    payment = _payment_for(gateway, intent, create=True)
    if payment is None:
        return WebhookEvent.Status.IGNORED, "The PaymentIntent is not for one of our invoices or top-ups."
    _apply_details(payment, intent, details)
    if payment.succeeded_at is not None or Payment.RANK[payment.status] >= Payment.RANK[Payment.Status.SUCCEEDED]:
        payment.save()
        return WebhookEvent.Status.IGNORED, "The payment already succeeded: a late failure changes nothing."
    error = intent.get("last_payment_error") or {}
    code = str(error.get("decline_code") or error.get("code") or "card_declined")
    if code == AUTHENTICATION_REQUIRED and intent.get("status") != "canceled":
        # Stripe reports an off-session charge that needs 3-D Secure as a failure, but the same
        # PaymentIntent stays confirmable: the top-up or dunning step that made it is waiting for
        # the customer at the emailed link. Retrying or dunning now could charge twice.
        payment.failure_code, payment.failure_message = code, decline_message(code)
        payment.save()
        return WebhookEvent.Status.PROCESSED, "Waiting for the customer to confirm the payment (3-D Secure)."
    payment.status, payment.failure_code, payment.failure_message = Payment.Status.FAILED, code, decline_message(code)
    payment.save()
    if payment.top_up_id is not None:
        top_up_payment_fail(gateway=gateway, gateway_reference=payment.gateway_reference, decline_code=code,
                            message=payment.failure_message)  # fmt: skip
    if payment.invoice_id is not None:
        dunning_payment_failed(payment=payment, now=timezone.now())  # opens or advances the dunning case
    return WebhookEvent.Status.PROCESSED, ""


def _on_intent_processing(gateway: str, intent: Mapping[str, Any], details: Mapping[str, Any] | None) -> Outcome:
    payment = _payment_for(gateway, intent, create=False)
    if payment is None:
        return WebhookEvent.Status.IGNORED, "The PaymentIntent is not one of our payments."
    _apply_details(payment, intent, details)
    if payment.status == Payment.Status.REQUIRES_PAYMENT:
        payment.status = Payment.Status.PROCESSING
    payment.save()
    return WebhookEvent.Status.PROCESSED, ""


def _on_charge_succeeded(gateway: str, charge: Mapping[str, Any], details: Mapping[str, Any] | None) -> Outcome:
    """Only the payment method details (card, wallet): the PaymentIntent's event applies the money."""
    payment = _payment_for_charge(gateway, charge)
    if payment is None:
        return WebhookEvent.Status.IGNORED, "The charge is not one of our payments."
    _apply_details(payment, charge, details)
    payment.save()
    return WebhookEvent.Status.PROCESSED, ""


def _on_charge_refunded(gateway: str, charge: Mapping[str, Any], details: Mapping[str, Any] | None) -> Outcome:
    payment = _payment_for_charge(gateway, charge)
    if payment is None:
        return WebhookEvent.Status.IGNORED, "The charge is not one of our payments."
    _apply_details(payment, charge, details)
    refunded = _minor(charge.get("amount_refunded"), charge.get("currency"), payment.currency)
    payment.amount_refunded = max(payment.amount_refunded, refunded)
    if (charge.get("refunded") or payment.amount_refunded >= payment.amount) and payment.advance(
        Payment.Status.REFUNDED
    ):
        payment.refunded_at = timezone.now()
    payment.save()
    if payment.invoice_id is not None:
        invoice_refunds_refresh(invoice_id=payment.invoice_id)
    return WebhookEvent.Status.PROCESSED, ""


def _dispute_payment(gateway: str, dispute: Mapping[str, Any]) -> Payment | None:
    """The (locked) payment a dispute is about: by its PaymentIntent, else by its charge."""
    intent = _reference(dispute.get("payment_intent"))
    return (
        _locked(Payment.objects.filter(gateway=gateway, gateway_reference=intent).first()) if intent else None
    ) or _locked(Payment.objects.filter(gateway=gateway, charge_reference=_reference(dispute.get("charge"))).first())


def _dispute_record(payment: Payment, dispute: Mapping[str, Any]) -> None:
    before = {"status": payment.status, "dispute_reason": payment.dispute_reason}
    if payment.advance(Payment.Status.DISPUTED):
        payment.disputed_at = timezone.now()
    payment.dispute_reason = str(dispute.get("reason") or "")[:60]
    payment.dispute_status = str(dispute.get("status") or "")[:30]
    payment.save()
    if before["status"] != payment.status:
        audit_record(
            action="payment.dispute", organization=payment.organization, obj=payment, before=before,
            after={"status": payment.status, "dispute_reason": payment.dispute_reason, "amount": str(payment.amount)},
        )  # fmt: skip


def _on_dispute_created(gateway: str, dispute: Mapping[str, Any], details: Mapping[str, Any] | None) -> Outcome:
    """A dispute opened or changed (``charge.dispute.created`` / ``.updated``): recorded on the payment."""
    payment = _dispute_payment(gateway, dispute)
    if payment is None:
        return WebhookEvent.Status.IGNORED, "The disputed charge is not one of our payments."
    _dispute_record(payment, dispute)
    return WebhookEvent.Status.PROCESSED, ""


def _on_dispute_closed(gateway: str, dispute: Mapping[str, Any], details: Mapping[str, Any] | None) -> Outcome:
    """A dispute ended. Lost: the bank took the disputed amount back, so the invoice owes it again
    (``amount_charged_back``, counted with refunds in the invoice's balance). Won: the money stays."""
    payment = _dispute_payment(gateway, dispute)
    if payment is None:
        return WebhookEvent.Status.IGNORED, "The disputed charge is not one of our payments."
    _dispute_record(payment, dispute)
    lost = Decimal(0)
    if dispute.get("status") == "lost":
        lost = _minor(dispute.get("amount"), dispute.get("currency"), payment.currency)
    payment_charged_back(payment, lost)
    return WebhookEvent.Status.PROCESSED, ""


def payment_charged_back(payment: Payment, amount: Decimal) -> None:
    """What a lost dispute took back from the (locked) payment: set, not added to, so an outcome
    told twice changes nothing; the invoice owes it again (``invoice_refunds_refresh``)."""
    if payment.amount_charged_back == amount:
        return
    before = {"amount_charged_back": str(payment.amount_charged_back)}
    payment.amount_charged_back = amount
    payment.save(update_fields=["amount_charged_back", "updated_at"])
    audit_record(action="payment.chargeback", organization=payment.organization, obj=payment, before=before,
                 after={"amount_charged_back": str(amount), "dispute_status": payment.dispute_status})  # fmt: skip
    if payment.invoice_id is not None:
        invoice_refunds_refresh(invoice_id=payment.invoice_id)


_HANDLERS: dict[str, Handler] = {
    "payment_intent.succeeded": _on_intent_succeeded,
    "payment_intent.payment_failed": _on_intent_failed,
    "payment_intent.processing": _on_intent_processing,
    "charge.succeeded": _on_charge_succeeded,
    "charge.refunded": _on_charge_refunded,
    "charge.dispute.created": _on_dispute_created,
    "charge.dispute.updated": _on_dispute_created,
    "charge.dispute.closed": _on_dispute_closed,
}


def _handler_for(gateway: str, event_type: str) -> Handler | None:
    if gateway == STRIPE:
        return _HANDLERS.get(event_type)
    if gateway == "paypal":
        from billing.payments.paypal_services import PAYPAL_HANDLERS

        return PAYPAL_HANDLERS.get(event_type)
    return None


def _event_object(gateway: str, payload: Mapping[str, Any]) -> Mapping[str, Any]:
    """What the event is about: Stripe's ``data.object``, PayPal's ``resource``."""
    if gateway == "paypal":
        return payload.get("resource") or {}
    return (payload.get("data") or {}).get("object") or {}


def _reference(value: Any) -> str:
    """An id, whether the field holds it or the expanded object."""
    if isinstance(value, Mapping):
        return str(value.get("id") or "")
    return str(value or "")


def _locked(payment: Payment | None) -> Payment | None:
    """Lock the payment, after its invoice (the order the pay service and the invoice use)."""
    if payment is None:
        return None
    if payment.invoice_id is not None:
        Invoice.objects.select_for_update().filter(pk=payment.invoice_id).first()
    return Payment.objects.select_for_update().get(pk=payment.pk)


def _payment_for_charge(gateway: str, charge: Mapping[str, Any]) -> Payment | None:
    intent = _reference(charge.get("payment_intent"))
    if intent:
        payment = _locked(Payment.objects.filter(gateway=gateway, gateway_reference=intent).first())
        if payment is not None:
            return payment
    charge_id = _reference(charge.get("id"))
    return _locked(Payment.objects.filter(gateway=gateway, charge_reference=charge_id).first()) if charge_id else None


def _payment_for(gateway: str, intent: Mapping[str, Any], *, create: bool) -> Payment | None:
    """The payment of a PaymentIntent: by its id, else by the attempt key in its metadata (the
    PaymentIntent of an attempt whose answer we never stored), else, for money that moved for
    one of our invoices or top-ups outside an attempt, a new payment row."""
    reference = _reference(intent.get("id"))
    if not reference:
        return None
    found = _locked(Payment.objects.filter(gateway=gateway, gateway_reference=reference).first())
    if found is not None:
        return found
    metadata = intent.get("metadata") or {}
    key = _attempt_key(metadata)
    if key:
        found = _locked(Payment.objects.filter(idempotency_key=key).first())
        if found is not None and found.gateway_reference in ("", reference):
            found.gateway_reference = reference
            return found
    if not create:
        return None
    return _payment_create(gateway, intent, metadata, key)


def _attempt_key(metadata: Mapping[str, Any]) -> str:
    key = str(metadata.get("idempotency_key") or "")
    if key.startswith(("invoice:", "topup:")):
        return key
    attempt = metadata.get("attempt")
    if attempt and metadata.get("invoice_id"):
        return f"invoice:{metadata['invoice_id']}:attempt:{attempt}"
    if attempt and metadata.get("top_up"):
        return f"topup:{metadata['top_up']}:attempt:{attempt}"
    return ""


def _payment_create(gateway: str, intent: Mapping[str, Any], metadata: Mapping[str, Any], key: str) -> Payment | None:
    reference = _reference(intent.get("id"))
    try:
        invoice_id = int(metadata.get("invoice_id") or 0)
        top_up_id = int(metadata.get("top_up") or 0)
        attempt = int(metadata.get("attempt") or 0)
        currency = currency_code(str(intent.get("currency") or ""))
        amount = from_minor(int(intent.get("amount") or 0), currency)
    except (ValueError, TypeError, CurrencyError):
        return None
    invoice = Invoice.objects.filter(pk=invoice_id).first() if invoice_id else None
    top_up = TopUp.objects.filter(pk=top_up_id).first() if top_up_id and invoice is None else None
    target = invoice or top_up
    if target is None or amount <= 0:
        return None
    if not key or Payment.objects.filter(idempotency_key=key).exists():
        key = f"{'invoice' if invoice else 'topup'}:{target.pk}:intent:{reference}"
    if not attempt:
        attempts = Payment.objects.filter(invoice=invoice) if invoice else Payment.objects.filter(top_up=top_up)
        attempt = (attempts.aggregate(last=Max("attempt"))["last"] or 0) + 1
    payment = Payment.objects.create(
        organization_id=target.organization_id, invoice=invoice, top_up=top_up, attempt=attempt, gateway=gateway,
        gateway_reference=reference, idempotency_key=key, amount=amount, currency=currency,
    )  # fmt: skip
    return _locked(payment)


def _received(intent: Mapping[str, Any], payment: Payment) -> Decimal:
    """What the gateway received (``amount_received``; localstripe only sends ``amount``)."""
    received = intent.get("amount_received") or intent.get("amount")
    amount = _minor(received, intent.get("currency"), payment.currency)
    return amount if amount > 0 else payment.amount


def _minor(units: Any, currency: Any, fallback_currency: str) -> Decimal:
    try:
        return from_minor(int(units or 0), currency_code(str(currency or fallback_currency)))
    except (ValueError, TypeError, CurrencyError):
        return Decimal(0)


def _method_details(event_type: str, obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ``payment_method_details`` of the charge that paid (card, or which wallet), from the
    event; for a success whose charge is only an id (Stripe's current API), fetched from Stripe."""
    if obj.get("object") == "charge":
        return obj.get("payment_method_details")
    charge = obj.get("latest_charge")
    if isinstance(charge, Mapping) and charge.get("payment_method_details"):
        return charge["payment_method_details"]
    for old in (obj.get("charges") or {}).get("data") or []:  # API versions before 2022-11-15
        if isinstance(old, Mapping) and old.get("payment_method_details"):
            return old["payment_method_details"]
    method = obj.get("payment_method")
    if not isinstance(method, Mapping):  # a failure: the method that failed, expanded in the error
        method = (obj.get("last_payment_error") or {}).get("payment_method")
    if isinstance(method, Mapping) and method.get("type"):  # expanded PaymentMethod
        kind = str(method["type"])
        return {"type": kind, kind: method.get(kind) or {}}
    if isinstance(charge, str) and charge and event_type == "payment_intent.succeeded":
        try:
            return stripe_gateway().charge_details(charge).get("payment_method_details")
        except PaymentError as exc:
            logger.warning("charge %s: payment method details not fetched: %s", charge, exc)
    return None


def _apply_details(payment: Payment, obj: Mapping[str, Any], details: Mapping[str, Any] | None) -> None:
    charge = obj["id"] if obj.get("object") == "charge" else _reference(obj.get("latest_charge"))
    if charge:
        payment.charge_reference = str(charge)
    if details:
        kind = str(details.get("type") or "")
        wallet = ((details.get(kind) or {}).get("wallet") or {}) if kind else {}
        payment.payment_method_type = kind[:30]
        payment.wallet = str(wallet.get("type") or "")[:30] if isinstance(wallet, Mapping) else ""
        card = details.get("card") if kind == "card" else None
        if isinstance(card, Mapping) and card.get("fingerprint"):
            payment.card_fingerprint = str(card["fingerprint"])[:64]

"""Dunning (DESIGN.md flow 6): retry or remind on unpaid invoices according to the issuer's policy.

Opening. A case opens when a charge of the invoice fails (the ``payment_intent.payment_failed``
event, ``dunning_payment_failed``) or, in the periodic sweep, when an open invoice passes its due
date. Its steps fall on the policy's days after that moment (default 1, 3, 5 and 7), never less
than a day apart (an invoice found long overdue does not get four emails in one morning).

A step, under locks on the invoice and then the case (the order the payment services use):

- **automatic charge** when the policy allows it and the organization has a saved default payment
  method that no hard decline blocked: a ``Payment`` with the key ``invoice:<id>:attempt:<n>`` is
  committed *before* the gateway is called (status ``processing``, so the pay page waits instead of
  starting a second payment); the gateway charges off-session with that key; the outcome is
  recorded under the locks again. A crash in between leaves the step in flight: once its lease
  passes, the sweep repeats the call with the same key (the gateway answers with the first result),
  or takes the outcome a webhook recorded meanwhile, so the invoice is never charged twice.
- **reminder** otherwise: an email to the billing contacts with the pay link.

A soft decline keeps the schedule (and the customer is told when the next try is); a hard decline
(``HARD_DECLINE_CODES``: lost, stolen, expired card, …) or a bank asking for 3-D Secure stops
automatic retries of that payment method, and so does a hard decline of the same card (by the
gateway's fingerprint) when the customer tried to pay the invoice on the pay page: the
organization's fallback method (or a new default) is charged on the next steps if it has one;
reminders continue either way.
Our own misconfiguration makes that step a reminder and is logged for operators.

Ending. A payment that settles the invoice (webhook, synchronous success, a transfer recorded by
hand) closes the case as recovered. When the last step and the grace period passed unpaid, the
invoice becomes uncollectible (if the policy says so), an ``AuditEvent`` is written and the
operator is emailed (``OPERATOR_EMAIL``, else the staff users).

Twice-run safety: one case per invoice and one step row per (case, number), both unique and
written under the case's row lock; emails are sent after the commit that recorded them (at most
once: a crash between the commit and the SMTP conversation loses that email rather than repeat it).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

from django.core.mail import EmailMessage
from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone
from django.utils.translation import gettext_noop

from aggregator.money import quantize
from aggregator.tenancy.models import User
from aggregator.tenancy.services import audit_record
from billing.alerts.services import billing_contacts
from billing.invoicing.models import Invoice
from billing.invoicing.services import InvoiceError, invoice_mark_uncollectible, invoice_payment_record
from billing.payments.attempts import open_attempts, payment_attempt_cancel
from billing.payments.dunning.emails import CustomerNotice, customer_email, operator_email, operator_recipients
from billing.payments.dunning.models import DunningCase, DunningStep
from billing.payments.dunning.selectors import dunning_cases_due, dunning_policy_for
from billing.payments.gateways import gateway_for
from billing.payments.gateways.base import (
    HARD_DECLINE_CODES,
    ChargeRequest,
    ChargeResult,
    PaymentConfigurationError,
    PaymentDeclined,
    PaymentError,
    PaymentNeedsAction,
    PaymentTemporaryFailure,
    decline_message,
)
from billing.payments.models import PaymentMethod
from billing.payments.records import Payment

logger = logging.getLogger(__name__)

DUNNABLE = (Invoice.Status.OPEN, Invoice.Status.PARTIALLY_PAID)
# A charge in flight longer than this is presumed interrupted: the sweep repeats it (same key).
CHARGE_LEASE = timedelta(minutes=15)
# Steps of one case are at least this far apart, even when the schedule is behind.
MIN_GAP = timedelta(days=1)
# Another payment of the invoice is being confirmed: look again after this.
BUSY_RETRY = timedelta(days=1)
# Payment methods that can be charged without the customer (PayPal orders need the buyer).
OFF_SESSION_KINDS = (PaymentMethod.Kind.CARD, PaymentMethod.Kind.SEPA_DEBIT)


@dataclass(frozen=True)
class ChargePlan:
    """An automatic charge committed and about to be sent to the gateway."""

    step_id: int
    gateway: str
    request: ChargeRequest


# --- Opening ----------------------------------------------------------------------------------


def _left(invoice: Invoice) -> Decimal:
    """What is still owed (credit notes and refunds counted), at the currency's minor unit."""
    return quantize(invoice.balance_due, invoice.currency, rounding="ROUND_HALF_UP")


def dunning_case_open(*, invoice_id: int, trigger: str, anchor_at: datetime) -> DunningCase | None:
    """Open the invoice's case, its steps counted from ``anchor_at``; the existing case if there is
    one. None when the invoice is not collectible or its issuer's policy is off."""
    with transaction.atomic():
        invoice = Invoice.objects.select_for_update().select_related("organization").get(pk=invoice_id)
        existing = DunningCase.objects.filter(invoice=invoice).first()
        if existing is not None:
            return existing
        if invoice.status not in DUNNABLE or _left(invoice) <= 0:
            return None
        policy = dunning_policy_for(issuer_id=invoice.issuer_id)
        if not policy.enabled:
            return None
        case = DunningCase(
            organization_id=invoice.organization_id, invoice=invoice, opened_by=trigger, anchor_at=anchor_at,
            retry_days=", ".join(str(day) for day in policy.days), grace_days=policy.grace_days,
            automatic_retries=policy.automatic_retries,
        )  # fmt: skip
        case.next_step_at = case.step_due(1)
        case.save()
        audit_record(action="dunning.open", organization=invoice.organization, obj=case,
                     after={"invoice": invoice.number, "trigger": trigger, "days": case.retry_days,
                            "amount_left": str(_left(invoice))})  # fmt: skip
        return case


def dunning_open_overdue(*, now: datetime) -> list[DunningCase]:
    """Open a case for every open invoice past its due date that has none (steps count from the
    end of the due date)."""
    overdue = Invoice.objects.filter(status__in=DUNNABLE, due_date__lt=now.date(), dunning_case__isnull=True)
    opened = []
    for invoice_id, due in list(overdue.order_by("due_date", "pk").values_list("pk", "due_date")):
        assert due is not None  # filtered on due_date__lt
        anchor = datetime.combine(due + timedelta(days=1), time.min, tzinfo=UTC)
        case = dunning_case_open(invoice_id=invoice_id, trigger=DunningCase.Trigger.OVERDUE, anchor_at=anchor)
        if case is not None:
            opened.append(case)
    return opened


# --- Gateway events (called by the webhook handlers, inside their transaction) ------------------


def dunning_payment_failed(*, payment: Payment, now: datetime) -> DunningCase | None:
    """A charge of an invoice failed (verified event). A dunning charge waiting for its outcome
    records it; any other failed payment opens the invoice's case if it has none. The caller holds
    the locks on the invoice and the payment."""
    if payment.invoice_id is None:
        return None
    step = DunningStep.objects.filter(payment=payment).first()
    if step is not None:
        if step.outcome != DunningStep.Outcome.PROCESSING:
            return None  # in flight (the charge's own answer records it) or already recorded
        code = payment.failure_code or "card_declined"
        return _record_failure(step_id=step.pk, code=code, message=payment.failure_message or decline_message(code),
                               now=now, allowed=(DunningStep.Outcome.PROCESSING,))  # fmt: skip
    return dunning_case_open(invoice_id=payment.invoice_id, trigger=DunningCase.Trigger.PAYMENT_FAILED, anchor_at=now)


def dunning_payment_succeeded(*, payment: Payment, now: datetime) -> DunningCase | None:
    """A payment of an invoice succeeded (verified event, after it was applied to the invoice):
    its dunning step is paid, and the case closes if the invoice is settled."""
    if payment.invoice_id is None:
        return None
    step = DunningStep.objects.select_for_update().filter(payment=payment).first()
    if step is not None and step.outcome in (DunningStep.Outcome.PENDING, DunningStep.Outcome.PROCESSING):
        step.outcome, step.finished_at = DunningStep.Outcome.SUCCEEDED, now
        step.save(update_fields=["outcome", "finished_at"])
    return dunning_invoice_settled(invoice_id=payment.invoice_id, now=now)


def dunning_invoice_settled(*, invoice_id: int, now: datetime) -> DunningCase | None:
    """Close the invoice's active case if the invoice no longer needs collecting."""
    with transaction.atomic():
        invoice = Invoice.objects.select_for_update().get(pk=invoice_id)
        case = DunningCase.objects.select_for_update().filter(invoice=invoice, state=DunningCase.State.ACTIVE).first()
        if case is not None:
            _close_if_settled(case, invoice, now)
        return case


def _close_if_settled(case: DunningCase, invoice: Invoice, now: datetime) -> bool:
    if invoice.status == Invoice.Status.PAID or (invoice.status in DUNNABLE and _left(invoice) <= 0):
        _close(case, DunningCase.State.RECOVERED, "The invoice is paid.", now)
        return True
    if invoice.status == Invoice.Status.VOID:
        _close(case, DunningCase.State.CANCELED, "The invoice was voided.", now)
        return True
    if invoice.status == Invoice.Status.UNCOLLECTIBLE:
        _close(case, DunningCase.State.CANCELED, "The invoice was marked uncollectible by hand.", now)
        return True
    return False


def _close(case: DunningCase, state: str, note: str, now: datetime) -> None:
    case.state, case.close_note, case.closed_at, case.next_step_at = state, note, now, None
    case.save()
    audit_record(action=f"dunning.{state}", organization=case.organization, obj=case, after={"note": note})


@transaction.atomic
def dunning_case_stop(*, case_id: int, actor: User | None = None, reason: str = "") -> DunningCase:
    """The operator stops a case (no more charges or reminders); the invoice stays as it is."""
    case = DunningCase.objects.select_for_update().get(pk=case_id)
    if case.is_active:
        case.state, case.closed_at, case.next_step_at = DunningCase.State.CANCELED, timezone.now(), None
        case.close_note = (reason or "Stopped by an operator.")[:300]
        case.save()
        audit_record(action="dunning.stop", organization=case.organization, actor=actor, obj=case,
                     after={"reason": case.close_note})  # fmt: skip
    return case


# --- The sweep --------------------------------------------------------------------------------


def dunning_run_due(*, now: datetime) -> list[DunningCase]:
    """The periodic sweep: open cases for overdue invoices, then take every step that is due. One
    case's unexpected error is logged and does not stop the others. Safe to run twice."""
    dunning_open_overdue(now=now)
    done = []
    for case_id in list(dunning_cases_due(now=now).values_list("pk", flat=True)):
        try:
            done.append(dunning_case_step(case_id=case_id, now=now))
        except Exception:
            logger.exception("dunning case %s: the due step failed; the next sweep tries again", case_id)
    return done


def dunning_case_step(*, case_id: int, now: datetime) -> DunningCase:
    """Take the case's next step if it is due (a charge, a reminder, or the write-off)."""
    plan = _step_begin(case_id=case_id, now=now)
    if plan is not None:
        _charge(plan, now=now)
    return DunningCase.objects.get(pk=case_id)


def _lock(case_id: int) -> tuple[DunningCase, Invoice]:
    """Lock the invoice, then the case (the order the payment services lock in)."""
    invoice_id = DunningCase.objects.filter(pk=case_id).values_list("invoice_id", flat=True).get()
    invoice = Invoice.objects.select_for_update().select_related("organization", "issuer").get(pk=invoice_id)
    case = DunningCase.objects.select_for_update().select_related("organization").get(pk=case_id)
    return case, invoice


def _step_begin(*, case_id: int, now: datetime) -> ChargePlan | None:
    """Under the locks: decide the due step; commit a charge about to be made, or do the rest."""
    with transaction.atomic():
        case, invoice = _lock(case_id)
        if not case.is_active or case.next_step_at is None or case.next_step_at > now:
            return None
        if _close_if_settled(case, invoice, now):
            return None
        in_flight = case.steps.filter(outcome=DunningStep.Outcome.PENDING).select_related("payment").first()
        if in_flight is not None:
            return _resume(case, in_flight, now)
        number = case.steps_done + 1
        if number > len(case.days):
            _exhaust(case, invoice, now)
            return None
        if Payment.objects.filter(invoice=invoice, status=Payment.Status.PROCESSING).exists():
            case.next_step_at = now + BUSY_RETRY  # a payment is being confirmed; its event decides
            case.save(update_fields=["next_step_at"])
            return None
        method = _chargeable_method(case, invoice, now)
        if method is not None and not _open_attempts_cancel(invoice):
            case.next_step_at = now + BUSY_RETRY
            case.save(update_fields=["next_step_at"])
            return None
        if method is None:
            step = DunningStep.objects.create(organization_id=case.organization_id, case=case, number=number,
                                              kind=DunningStep.Kind.REMINDER)  # fmt: skip
            _step_finish(case, invoice, step, outcome=DunningStep.Outcome.REMINDED, now=now,
                         notice_kind="reminder")  # fmt: skip
            return None
        left = _left(invoice)
        attempt = (Payment.objects.filter(invoice=invoice).aggregate(last=Max("attempt"))["last"] or 0) + 1
        payment = Payment.objects.create(
            organization_id=invoice.organization_id, invoice=invoice, attempt=attempt, gateway=method.gateway,
            idempotency_key=f"invoice:{invoice.pk}:attempt:{attempt}", amount=left, currency=invoice.currency,
            status=Payment.Status.PROCESSING, payment_method_type=method.kind, wallet=method.wallet,
        )  # fmt: skip
        step = DunningStep.objects.create(
            organization_id=case.organization_id, case=case, number=number, kind=DunningStep.Kind.CHARGE,
            payment=payment, payment_method=method, payment_method_label=method.label,
        )  # fmt: skip
        case.next_step_at = now + CHARGE_LEASE  # if we die mid-call, the sweep repeats it after this
        case.save(update_fields=["next_step_at"])
        return _plan(step, payment, method, invoice)


def _plan(step: DunningStep, payment: Payment, method: PaymentMethod, invoice: Invoice) -> ChargePlan:
    request = ChargeRequest(
        amount=payment.amount, currency=payment.currency, payment_method=method.gateway_reference,
        customer_reference=method.customer_reference, idempotency_key=payment.idempotency_key,
        description=f"Invoice {invoice.number}", off_session=True,
        metadata={"invoice_id": str(invoice.pk), "invoice_number": invoice.number or "",
                  "attempt": str(payment.attempt), "payment_id": str(payment.pk),
                  "organization": str(invoice.organization_id), "dunning_step": str(step.number)},
    )  # fmt: skip
    return ChargePlan(step_id=step.pk, gateway=payment.gateway, request=request)


def _resume(case: DunningCase, step: DunningStep, now: datetime) -> ChargePlan | None:
    """A charge whose outcome was never recorded (the worker died): take what an event recorded on
    its payment meanwhile, else repeat the call with the same key."""
    payment, method = step.payment, step.payment_method
    invoice = case.invoice
    if payment is not None and payment.succeeded_at is not None:
        step.outcome, step.finished_at = DunningStep.Outcome.SUCCEEDED, now
        step.save(update_fields=["outcome", "finished_at"])
        case.steps_done = step.number
        if not _close_if_settled(case, invoice, now):
            _advance(case, now)
        return None
    if payment is not None and payment.status == Payment.Status.FAILED:
        code = payment.failure_code or "card_declined"
        _failure_apply(case, invoice, step, code=code, message=payment.failure_message or decline_message(code),
                       now=now)  # fmt: skip
        return None
    if payment is None or method is None:
        _error_apply(case, invoice, step, code="payment_method_missing", now=now)
        return None
    case.next_step_at = now + CHARGE_LEASE
    case.save(update_fields=["next_step_at"])
    return _plan(step, payment, method, invoice)


def _chargeable_method(case: DunningCase, invoice: Invoice, now: datetime) -> PaymentMethod | None:
    """The saved payment method to charge now: the default, else the fallback, skipping any that a
    hard decline (or a bank asking for 3-D Secure) blocked in this case, that expired or whose
    gateway is not configured. None: the step is a reminder."""
    if not case.automatic_retries:
        return None
    blocked = set(
        case.steps.filter(Q(decline_code__in=HARD_DECLINE_CODES) | Q(outcome=DunningStep.Outcome.ACTION_REQUIRED))
        .exclude(payment_method=None)
        .values_list("payment_method_id", flat=True)
    )
    # The same card hard-declined when the customer paid the invoice themselves (the pay page).
    declined_cards = set(
        Payment.objects.filter(invoice=invoice, status=Payment.Status.FAILED, failure_code__in=HARD_DECLINE_CODES)
        .exclude(card_fingerprint="")
        .values_list("gateway", "card_fingerprint")
    )
    candidates = PaymentMethod.objects.filter(
        Q(is_default=True) | Q(is_fallback=True), organization_id=invoice.organization_id
    ).order_by("-is_default")
    for method in candidates:
        if method.pk in blocked or method.kind not in OFF_SESSION_KINDS or method.expired_on(now.date()):
            continue
        if method.fingerprint and (method.gateway, method.fingerprint) in declined_cards:
            continue
        try:
            gateway_for(method.gateway)
        except PaymentConfigurationError:
            logger.error("dunning of invoice %s: gateway %r of %s is not configured", invoice.pk, method.gateway,
                         method.label)  # fmt: skip
            continue
        return method
    return None


def _open_attempts_cancel(invoice: Invoice) -> bool:
    """Cancel the invoice's open on-session attempts before charging off-session, so an old pay
    page cannot pay it a second time. False when one of them turned out to be paid or being paid,
    or Stripe could not say."""
    for payment in open_attempts(invoice):
        try:
            if not payment_attempt_cancel(payment, message=gettext_noop("Replaced by an automatic payment attempt.")):
                return False
        except PaymentError:
            return False
    return True


def _charge(plan: ChargePlan, *, now: datetime) -> None:
    """Call the gateway (outside any transaction) and record what it answered."""
    try:
        result = gateway_for(plan.gateway).charge(plan.request)
    except PaymentNeedsAction as exc:
        _record_needs_action(step_id=plan.step_id, error=exc, now=now)
    except PaymentConfigurationError as exc:
        logger.error("dunning charge %s could not be made: %s", plan.request.idempotency_key, exc.message)
        _record_error(step_id=plan.step_id, code=exc.code, now=now)
    except PaymentDeclined as exc:
        _record_failure(step_id=plan.step_id, code=exc.decline_code, message=exc.message, now=now)
    except (PaymentTemporaryFailure, PaymentError) as exc:
        _record_failure(step_id=plan.step_id, code=exc.code, message=exc.message, now=now)
    else:
        _record_result(step_id=plan.step_id, result=result, now=now)


def _locked_step(
    step_id: int, allowed: tuple[str, ...]
) -> tuple[DunningCase, Invoice, DunningStep, Payment | None] | None:
    """Lock invoice, payment, case and step; None when another run already recorded the step."""
    case_id, payment_id = DunningStep.objects.filter(pk=step_id).values_list("case_id", "payment_id").get()
    invoice_id = DunningCase.objects.filter(pk=case_id).values_list("invoice_id", flat=True).get()
    invoice = Invoice.objects.select_for_update().select_related("organization", "issuer").get(pk=invoice_id)
    payment = Payment.objects.select_for_update().get(pk=payment_id) if payment_id else None
    case = DunningCase.objects.select_for_update().select_related("organization").get(pk=case_id)
    step = DunningStep.objects.select_for_update().get(pk=step_id)
    if step.outcome not in allowed:
        return None
    step.payment = payment
    return case, invoice, step, payment


def _record_result(*, step_id: int, result: ChargeResult, now: datetime) -> None:
    with transaction.atomic():
        locked = _locked_step(step_id, (DunningStep.Outcome.PENDING,))
        if locked is None:
            return
        case, invoice, step, payment = locked
        assert payment is not None
        payment.gateway_reference = payment.gateway_reference or result.gateway_reference
        case.steps_done = step.number
        if result.status == "processing":
            step.outcome = DunningStep.Outcome.PROCESSING
            step.save(update_fields=["outcome"])
            payment.save()
            _advance(case, now)  # the next step waits while the payment is processing
            return
        if payment.succeeded_at is None:
            payment.amount, payment.succeeded_at = result.amount, now
            try:
                invoice_payment_record(invoice_id=invoice.pk, amount=result.amount)
            except InvoiceError as exc:
                logger.error("payment %s: paid, but not applied to invoice %s: %s", payment.pk, invoice.pk, exc)
            payment.advance(Payment.Status.SUCCEEDED)
            payment.failure_code, payment.failure_message = "", ""
        payment.save()
        step.outcome, step.finished_at = DunningStep.Outcome.SUCCEEDED, now
        step.save(update_fields=["outcome", "finished_at"])
        invoice.refresh_from_db()
        if not _close_if_settled(case, invoice, now):
            _advance(case, now)


def _record_failure(
    *, step_id: int, code: str, message: str, now: datetime,
    allowed: tuple[str, ...] = (DunningStep.Outcome.PENDING,),
) -> DunningCase | None:  # fmt: skip
    with transaction.atomic():
        locked = _locked_step(step_id, allowed)
        if locked is None:
            return None
        case, invoice, step, payment = locked
        if payment is not None and payment.succeeded_at is None:
            payment.status, payment.failure_code, payment.failure_message = Payment.Status.FAILED, code, message
            payment.save()
        _failure_apply(case, invoice, step, code=code, message=message, now=now)
        return case


def _failure_apply(
    case: DunningCase, invoice: Invoice, step: DunningStep, *, code: str, message: str, now: datetime
) -> None:
    """A declined charge: block the method on a hard decline, schedule the next step, tell the customer."""
    hard = code in HARD_DECLINE_CODES
    step.decline_code, step.message = code, message
    case.last_failure_code, case.last_failure_message = code, message
    if hard and step.payment_method_id is not None:
        case.blocked_method_id = step.payment_method_id
        case.stop_reason = f"Hard decline ({code}) of {step.payment_method_label}: no more automatic retries of it."
    _step_finish(case, invoice, step, outcome=DunningStep.Outcome.DECLINED, now=now,
                 notice_kind="hard_declined" if hard else "declined")  # fmt: skip


def _record_needs_action(*, step_id: int, error: PaymentNeedsAction, now: datetime) -> None:
    """The bank wants the customer to confirm (3-D Secure): the PaymentIntent stays payable on the
    pay page; no automatic retries of this method; the customer gets the link."""
    with transaction.atomic():
        locked = _locked_step(step_id, (DunningStep.Outcome.PENDING,))
        if locked is None:
            return
        case, invoice, step, payment = locked
        code = "authentication_required"
        if payment is not None and payment.succeeded_at is None:
            payment.status, payment.failure_code, payment.failure_message = (
                Payment.Status.REQUIRES_PAYMENT, code, error.message)  # fmt: skip
            payment.gateway_reference = payment.gateway_reference or error.gateway_reference
            payment.save()
        step.decline_code, step.message = code, error.message
        case.last_failure_code, case.last_failure_message = code, error.message
        if step.payment_method_id is not None:
            case.blocked_method_id = step.payment_method_id
            case.stop_reason = f"The bank asks the customer to confirm payments of {step.payment_method_label}."
        _step_finish(case, invoice, step, outcome=DunningStep.Outcome.ACTION_REQUIRED, now=now,
                     notice_kind="needs_action", action_url=error.action_url)  # fmt: skip


def _record_error(*, step_id: int, code: str, now: datetime) -> None:
    with transaction.atomic():
        locked = _locked_step(step_id, (DunningStep.Outcome.PENDING,))
        if locked is None:
            return
        case, invoice, step, _payment = locked
        _error_apply(case, invoice, step, code=code, now=now)


def _error_apply(case: DunningCase, invoice: Invoice, step: DunningStep, *, code: str, now: datetime) -> None:
    """Our side could not charge (configuration): the step becomes a reminder; the method is not blocked."""
    payment = step.payment
    if payment is not None and payment.succeeded_at is None:
        payment.status, payment.failure_code = Payment.Status.FAILED, code
        payment.failure_message = PaymentConfigurationError.default_message
        payment.save()
    step.decline_code, step.message = code, PaymentConfigurationError.default_message
    _step_finish(case, invoice, step, outcome=DunningStep.Outcome.ERROR, now=now, notice_kind="reminder")


def _advance(case: DunningCase, now: datetime) -> None:
    """Schedule the step after ``steps_done`` (the write-off after the last), a day apart at least."""
    case.next_step_at = max(case.step_due(case.steps_done + 1), now + MIN_GAP)
    case.save()


def _step_finish(
    case: DunningCase, invoice: Invoice, step: DunningStep, *, outcome: str, now: datetime, notice_kind: str,
    action_url: str = "",
) -> None:  # fmt: skip
    """Record the step's outcome, schedule the next one, and email the customer after commit."""
    case.steps_done = step.number
    _advance(case, now)
    final = step.number >= len(case.days)
    notice = CustomerNotice(
        kind=notice_kind, final=final, next_at=None if final else case.next_step_at,
        end_at=case.next_step_at if final and case.next_step_at else case.end_at,
        method_label=step.payment_method_label, decline_code=step.decline_code, action_url=action_url,
    )  # fmt: skip
    policy = dunning_policy_for(issuer_id=invoice.issuer_id)
    recipients = billing_contacts(invoice.organization) if policy.send_reminders else []
    if recipients:
        step.emailed_to = recipients
        message = customer_email(invoice=invoice, notice=notice, recipients=recipients)
        transaction.on_commit(functools.partial(_send, message, f"dunning step {step.pk}"), robust=True)
    elif outcome == DunningStep.Outcome.REMINDED:
        outcome = DunningStep.Outcome.SKIPPED
        logger.warning("dunning of invoice %s: no billing contact to remind", invoice.pk)
    step.outcome, step.finished_at = outcome, now
    step.save()


def _send(message: EmailMessage, what: str) -> None:
    try:
        message.send(fail_silently=False)
    except Exception:
        logger.exception("%s: the email could not be sent", what)


# --- The end ----------------------------------------------------------------------------------


def _exhaust(case: DunningCase, invoice: Invoice, now: datetime) -> None:
    """The policy ran out with the invoice unpaid: write it off (if the policy says so), record it,
    and tell the operator after commit. Caller holds the locks."""
    policy = dunning_policy_for(issuer_id=invoice.issuer_id)
    written_off = False
    if policy.mark_uncollectible:
        invoice = invoice_mark_uncollectible(invoice_id=invoice.pk)
        written_off = True
    last = f"{case.last_failure_code}: {case.last_failure_message}" if case.last_failure_code else ""
    case.state, case.closed_at, case.next_step_at = DunningCase.State.EXHAUSTED, now, None
    case.close_note = "Written off as uncollectible." if written_off else "Policy ended; the invoice stays open."
    case.operator_notified_at = now
    case.save()
    audit_record(action="dunning.exhausted", organization=invoice.organization, obj=case,
                 after={"invoice": invoice.number, "amount_left": str(_left(invoice)), "steps": case.steps_done,
                        "last_failure": last, "uncollectible": written_off})  # fmt: skip
    recipients = operator_recipients()
    if not recipients:
        logger.error("dunning of invoice %s ended unpaid and no operator address is set (OPERATOR_EMAIL)", invoice.pk)
        return
    message = operator_email(invoice=invoice, steps_done=case.steps_done, last_failure=last, written_off=written_off,
                             recipients=recipients)  # fmt: skip
    transaction.on_commit(functools.partial(_send, message, f"dunning case {case.pk}"), robust=True)

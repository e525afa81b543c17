"""Automatic top-ups (DESIGN.md flow 3): evaluate rules, charge off-session, credit on success,
retry on a schedule, fall back to the backup method, disable after repeated failures.

1. Evaluation (after each settlement, and when a rule is saved) runs under a lock on the rule.
   The target's balance counts open top-ups as if paid, so one shortfall makes one top-up; the
   database allows one open top-up per rule, so concurrent evaluations cannot make two.
2. A charge first stores its attempt, with the idempotency key ``topup:<id>:attempt:<n>``, and
   commits; then calls the gateway outside any transaction; then records the outcome under locks
   (rule, then top-up). The ledger is credited only in that last step, on confirmed success. A
   crash between the gateway's success and our commit leaves the attempt in flight: once its lease
   passes, the periodic sweep repeats it with the same key, the gateway answers with the same
   charge, and the ledger is credited once.
3. Schedule of a top-up (``retry_plan``): the primary method at once, the primary again a day
   later, then the fallback method at once (without a fallback: the primary again two days
   later). A hard decline (lost or expired card, …) skips to the next method at once. Every failed
   attempt counts toward the rule's consecutive failures; at three the rule is disabled. The
   customer's owners and billing admins get an email after every failure.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, TypedDict

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from aggregator.money import CurrencyError, currency_code, quantize
from aggregator.tenancy.models import ApiKey, Organization, User
from aggregator.tenancy.services import audit_record
from billing.ledger import accounts
from billing.ledger.models import LedgerTransaction
from billing.ledger.posting import ledger_post
from billing.ledger.selectors import vendor_account_runway
from billing.ledger.services import wallet_top_up_credit
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
    SetupRequest,
)
from billing.payments.models import PaymentMethod
from billing.topups import selectors
from billing.topups.models import TargetKind, TopUp, TopUpAttempt, TopUpRule
from billing.topups.selectors import money_text
from billing.topups.tasks import top_up_charge_task, top_up_rules_evaluate_task
from providers.models import VendorAccount

logger = logging.getLogger(__name__)

MAX_CONSECUTIVE_FAILURES = 3
# An attempt in flight longer than this is presumed interrupted: the sweep repeats it (same key).
ATTEMPT_LEASE = timedelta(minutes=15)
# A charge waiting for the customer's confirmation (3-D Secure) is canceled after this.
ACTION_EXPIRY = timedelta(days=7)
# Our own misconfiguration (unknown gateway, …) is retried after this, without telling the customer.
CONFIGURATION_RETRY = timedelta(hours=1)


class TopUpRuleInvalid(ValueError):
    """A rule that cannot work; ``errors`` maps each field to what to fix."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        super().__init__(" ".join(f"{field}: {message}" for field, message in errors.items()))


class PaymentMethodInUse(ValueError):
    """A payment method that top-up rules still charge."""


# --- Evaluation -------------------------------------------------------------------------------


def top_up_rules_evaluate(
    *, vendor_account: VendorAccount | None = None, organization: Organization | None = None, today: date
) -> list[TopUp]:
    """Evaluate the enabled rules of ``vendor_account`` and of ``organization``'s wallet; create a
    top-up for each rule whose trigger fires and queue its charge after commit. Returns the
    created top-ups. Safe to run concurrently and repeatedly: one shortfall makes one top-up."""
    if vendor_account is None and organization is None:
        raise ValueError("Pass vendor_account, organization, or both.")
    targets = Q(pk__in=[])
    if vendor_account is not None:
        targets |= Q(target_kind=TargetKind.VENDOR_ACCOUNT, vendor_account=vendor_account)
    if organization is not None:
        targets |= Q(target_kind=TargetKind.WALLET, organization=organization)
    created = []
    for rule_id in TopUpRule.objects.filter(targets, enabled=True).order_by("pk").values_list("pk", flat=True):
        top_up = top_up_rule_evaluate(rule_id=rule_id, today=today)
        if top_up is not None:
            created.append(top_up)
    return created


def top_up_rule_evaluate(*, rule_id: int, today: date) -> TopUp | None:
    """Evaluate one rule under a lock on it; the top-up it created, if any."""
    with transaction.atomic():
        rule = (
            TopUpRule.objects.select_for_update(of=("self",))
            .select_related("organization", "vendor_account")
            .get(pk=rule_id)
        )
        if not rule.enabled:
            return None
        if rule.target_kind == TargetKind.WALLET and not _has_wallet(rule.organization):
            _note(rule, "Not topped up: the organization is invoiced monthly, so it has no prepaid wallet.")
            return None
        if rule.vendor_account is not None and rule.vendor_account.status == VendorAccount.Status.DISABLED:
            _note(rule, "Not topped up: the vendor account is disabled or disconnected.")
            return None
        current = selectors.target_runway_with_open_top_ups(rule=rule, today=today)
        if not selectors.trigger_fires(rule=rule, current=current):
            return None
        amount = selectors.planned_amount(rule=rule, balance=current.balance)
        month = today.replace(day=1)
        if rule.monthly_cap is not None:
            left = Decimal(rule.monthly_cap) - selectors.month_top_ups_amount(rule=rule, month=month)
            amount = min(amount, left)
            if amount <= 0 or amount < rule.minimum_amount:
                cap = money_text(rule.monthly_cap, rule.currency)
                reason = (
                    f"the monthly cap of {cap} is reached"
                    if left <= 0
                    else f"the monthly cap of {cap} leaves {money_text(left, rule.currency)}, less than the "
                    f"minimum top-up of {money_text(rule.minimum_amount, rule.currency)}"
                )
                _note(rule, f"Not topped up on {today.isoformat()}: {reason}. Raise the cap to top up this month.")
                return None
        if amount <= 0:
            _note(rule, f"Not topped up on {today.isoformat()}: the balance is already at the target balance.")
            return None
        try:
            with transaction.atomic():
                top_up = TopUp.objects.create(
                    organization_id=rule.organization_id, rule=rule, target_kind=rule.target_kind,
                    vendor_account_id=rule.vendor_account_id, amount=amount, currency=rule.currency, month=month,
                    status=TopUp.Status.PENDING,
                )  # fmt: skip
        except IntegrityError:
            # Another evaluation created this rule's open top-up first: that one covers the shortfall.
            return None
        _note(rule, "")
        audit_record(
            action="top_up.create", organization=rule.organization, obj=top_up,
            after={"rule": rule.pk, "amount": str(amount), "currency": rule.currency,
                   "balance": str(current.balance), "trigger": rule.trigger},
        )  # fmt: skip
        top_up_charge_task.delay_on_commit(top_up.pk)
        return top_up


def after_settlement(vendor_account: VendorAccount) -> None:
    """After-settlement step (``billing.ledger.flows.AFTER_SETTLEMENT``): evaluate the account's
    rules and its organization's wallet rules. A failure here is logged and does not stop the
    steps that follow."""
    try:
        top_up_rules_evaluate(
            vendor_account=vendor_account, organization=vendor_account.organization, today=timezone.now().date()
        )
    except Exception:
        logger.exception("top-up evaluation after settling vendor account %s failed", vendor_account.pk)


def _has_wallet(organization: Organization) -> bool:
    return organization.billing_mode == Organization.BillingMode.PREPAID_WALLET


def _note(rule: TopUpRule, message: str) -> None:
    """Record why the last evaluation did not top up (or clear it)."""
    if rule.status_message != message:
        if message:
            logger.info("top-up rule %s: %s", rule.pk, message)
        rule.status_message = message
        TopUpRule.objects.filter(pk=rule.pk).update(status_message=message)


# --- Schedule ---------------------------------------------------------------------------------

Role = Literal["primary", "fallback"]


@dataclass(frozen=True)
class Step:
    role: Role
    delay: timedelta  # after the previous attempt failed


def retry_plan(rule: TopUpRule) -> list[Step]:
    """The attempts of one top-up, in order."""
    if rule.fallback_method_id is not None:
        return [Step("primary", timedelta(0)), Step("primary", timedelta(days=1)), Step("fallback", timedelta(0))]
    return [Step("primary", timedelta(0)), Step("primary", timedelta(days=1)), Step("primary", timedelta(days=2))]


def next_step(plan: Sequence[Step], failures: Sequence[tuple[Role, bool]]) -> Step | None:
    """The step after ``failures`` (each: the role of the failed attempt's method and whether the
    decline was hard), or None when the plan is used up. A hard decline skips the remaining steps
    of its method and moves on at once."""
    position, immediate = 0, False
    for role, hard in failures:
        position += 1  # the failed attempt used plan[position - 1]
        immediate = hard
        if hard:
            while position < len(plan) and plan[position].role == role:
                position += 1
    if position >= len(plan):
        return None
    return Step(plan[position].role, timedelta(0)) if immediate else plan[position]


def _failures(top_up: TopUp) -> list[tuple[Role, bool]]:
    counted = (TopUpAttempt.Outcome.DECLINED, TopUpAttempt.Outcome.TEMPORARY_FAILURE)
    return [
        ("fallback" if a.is_fallback else "primary", a.decline_code in HARD_DECLINE_CODES)
        for a in top_up.attempts.filter(outcome__in=counted).order_by("number")
    ]


# --- Charging ---------------------------------------------------------------------------------


def top_up_charge(*, top_up_id: int, now: datetime | None = None) -> TopUp:
    """Make the top-up's next charge attempt if one is due. Returns at once when the top-up is no
    longer open or its next attempt is not due yet. Safe to run twice, and after a crash at any
    point: the attempt row (and its idempotency key) is committed before the gateway is called."""
    now = now or timezone.now()
    while True:
        attempt = _attempt_start(top_up_id=top_up_id, now=now)
        if attempt is None:
            return TopUp.objects.get(pk=top_up_id)
        top_up = _attempt_make(attempt=attempt, now=now)
        # A step due at once (the fallback after the primary's last retry, or after a hard decline)
        # runs right away; the plan has three steps, so this ends.
        if top_up.status != TopUp.Status.PENDING or top_up.next_attempt_at is None or top_up.next_attempt_at > now:
            return top_up


def _attempt_make(*, attempt: TopUpAttempt, now: datetime) -> TopUp:
    """Call the gateway (outside any transaction) and record what it answered."""
    top_up = attempt.top_up
    request = ChargeRequest(
        amount=quantize(top_up.amount, top_up.currency, rounding="ROUND_HALF_UP"),
        currency=top_up.currency,
        payment_method=attempt.payment_method_reference,
        customer_reference=attempt.customer_reference,
        idempotency_key=attempt.idempotency_key,
        description=f"Automatic top-up of {_target_label(top_up)}",
        off_session=True,
        metadata={
            "top_up": str(top_up.pk),
            "attempt": str(attempt.number),
            "organization": str(top_up.organization_id),
        },
    )
    try:
        result = gateway_for(attempt.gateway).charge(request)
    except PaymentNeedsAction as exc:
        return _record_needs_action(attempt_id=attempt.pk, error=exc, now=now)
    except PaymentConfigurationError as exc:
        return _record_configuration_error(attempt_id=attempt.pk, error=exc, now=now)
    except PaymentDeclined as exc:
        return _record_failure(attempt_id=attempt.pk, outcome=TopUpAttempt.Outcome.DECLINED,
                               decline_code=exc.decline_code, message=exc.message, now=now)  # fmt: skip
    except PaymentTemporaryFailure as exc:
        return _record_failure(attempt_id=attempt.pk, outcome=TopUpAttempt.Outcome.TEMPORARY_FAILURE,
                               decline_code="", message=exc.message, now=now)  # fmt: skip
    except PaymentError as exc:
        return _record_failure(attempt_id=attempt.pk, outcome=TopUpAttempt.Outcome.DECLINED,
                               decline_code=exc.code, message=exc.message, now=now)  # fmt: skip
    return _record_result(attempt_id=attempt.pk, result=result, now=now)


def top_up_retry_due(*, now: datetime) -> list[TopUp]:
    """The periodic sweep: make every attempt that is due (scheduled retries, and attempts a crash
    interrupted, once their lease passed) and cancel confirmation links that expired. One top-up's
    unexpected error is logged and does not stop the others. Returns the top-ups it charged."""
    charged = []
    for top_up_id, status in list(selectors.top_ups_due(now=now).values_list("pk", "status")):
        try:
            if status == TopUp.Status.ACTION_REQUIRED:
                _expire_action(top_up_id=top_up_id, now=now)
            else:
                charged.append(top_up_charge(top_up_id=top_up_id, now=now))
        except Exception:
            logger.exception("top-up %s: the due attempt failed; the next sweep tries again", top_up_id)
    return charged


def top_up_payment_confirm(*, gateway: str, gateway_reference: str, now: datetime | None = None) -> TopUp | None:
    """A verified gateway event says the charge ``gateway_reference`` succeeded (an asynchronous
    payment, or one the customer confirmed with 3-D Secure): credit the ledger once. A success that
    arrives after we gave up is credited too: the money moved."""
    now = now or timezone.now()
    found = TopUp.objects.filter(gateway=gateway, gateway_reference=gateway_reference).values_list("pk", flat=True)
    if not found:
        return None
    with transaction.atomic():
        top_up, rule = _lock(top_up_id=found[0])
        if top_up.status == TopUp.Status.SUCCEEDED:
            return top_up
        attempt = top_up.attempts.select_for_update().filter(gateway_reference=gateway_reference).last()
        if attempt is not None:
            attempt.outcome, attempt.finished_at = TopUpAttempt.Outcome.SUCCEEDED, now
            attempt.save(update_fields=["outcome", "finished_at"])
        _succeed(top_up=top_up, rule=rule, gateway_reference=gateway_reference, now=now)
        return top_up


def top_up_payment_fail(
    *, gateway: str, gateway_reference: str, decline_code: str, message: str = "", now: datetime | None = None
) -> TopUp | None:
    """A verified gateway event says the charge ``gateway_reference`` failed (an asynchronous
    payment that bounced): continue with the schedule as for a synchronous decline."""
    attempt = TopUpAttempt.objects.filter(
        gateway=gateway, gateway_reference=gateway_reference,
        outcome__in=[TopUpAttempt.Outcome.PROCESSING, TopUpAttempt.Outcome.ACTION_REQUIRED],
    ).first()  # fmt: skip
    if attempt is None:
        return None
    error = PaymentDeclined(decline_code, message or None)
    return _record_failure(attempt_id=attempt.pk, outcome=TopUpAttempt.Outcome.DECLINED, decline_code=decline_code,
                           message=error.message, now=now or timezone.now())  # fmt: skip


def _lock(*, top_up_id: int) -> tuple[TopUp, TopUpRule | None]:
    """Lock the top-up's rule, then the top-up: the order evaluation uses, so the two never deadlock."""
    rule_id = TopUp.objects.filter(pk=top_up_id).values_list("rule_id", flat=True).get()
    rule = None
    if rule_id is not None:
        rule = (
            TopUpRule.objects.select_for_update(of=("self",))
            .select_related("organization", "vendor_account", "primary_method", "fallback_method")
            .filter(pk=rule_id)
            .first()
        )
    top_up = (
        TopUp.objects.select_for_update(of=("self",)).select_related("organization", "vendor_account").get(pk=top_up_id)
    )
    return top_up, rule


def _attempt_start(*, top_up_id: int, now: datetime) -> TopUpAttempt | None:
    """Commit the attempt about to be made (or find the one a crash interrupted), or None."""
    with transaction.atomic():
        top_up, rule = _lock(top_up_id=top_up_id)
        if top_up.status not in (TopUp.Status.PENDING, TopUp.Status.PROCESSING):
            return None
        if top_up.next_attempt_at is not None and top_up.next_attempt_at > now:
            return None
        attempt = top_up.attempts.filter(outcome=TopUpAttempt.Outcome.PENDING).order_by("number").last()
        if attempt is None:
            if top_up.status == TopUp.Status.PROCESSING:
                return None  # the gateway is processing it; its webhook will tell
            if rule is None or not rule.enabled:
                _close(top_up, TopUp.Status.CANCELED, "Automatic top-ups were turned off before the charge.")
                return None
            step = next_step(retry_plan(rule), _failures(top_up))
            method = rule.fallback_method if step is not None and step.role == "fallback" else rule.primary_method
            if step is None or method is None:
                _close(top_up, TopUp.Status.FAILED, top_up.last_error or "No payment method left to try.")
                return None
            number = top_up.attempt_count + 1
            attempt = TopUpAttempt.objects.create(
                organization_id=top_up.organization_id, top_up=top_up, number=number, payment_method=method,
                payment_method_label=method.label, is_fallback=step.role == "fallback", gateway=method.gateway,
                payment_method_reference=method.gateway_reference, customer_reference=method.customer_reference,
                idempotency_key=f"topup:{top_up.pk}:attempt:{number}",
            )  # fmt: skip
            top_up.attempt_count = number
        top_up.status = TopUp.Status.PROCESSING
        top_up.gateway = attempt.gateway
        top_up.next_attempt_at = now + ATTEMPT_LEASE  # the lease: if we die mid-call, the sweep repeats it
        top_up.save(update_fields=["status", "gateway", "next_attempt_at", "attempt_count", "updated_at"])
        attempt.top_up = top_up
        return attempt


def _locked_attempt(attempt_id: int, outcomes: Sequence[str]) -> tuple[TopUp, TopUpRule | None, TopUpAttempt] | None:
    top_up_id = TopUpAttempt.objects.filter(pk=attempt_id).values_list("top_up_id", flat=True).get()
    top_up, rule = _lock(top_up_id=top_up_id)
    attempt = TopUpAttempt.objects.select_for_update().get(pk=attempt_id)
    if attempt.outcome not in outcomes:
        return None  # another run recorded this attempt's outcome already
    return top_up, rule, attempt


def _record_result(*, attempt_id: int, result: ChargeResult, now: datetime) -> TopUp:
    with transaction.atomic():
        locked = _locked_attempt(attempt_id, [TopUpAttempt.Outcome.PENDING])
        if locked is None:
            return TopUp.objects.get(attempts=attempt_id)
        top_up, rule, attempt = locked
        attempt.gateway_reference, attempt.finished_at = result.gateway_reference, now
        if result.amount != quantize(top_up.amount, top_up.currency, rounding="ROUND_HALF_UP"):
            logger.error("top-up %s: gateway charged %s %s, not %s", top_up.pk, result.amount, result.currency,
                         top_up.amount)  # fmt: skip
        if result.status == "processing":
            attempt.outcome = TopUpAttempt.Outcome.PROCESSING
            attempt.save()
            top_up.gateway_reference, top_up.next_attempt_at = result.gateway_reference, None
            top_up.save(update_fields=["gateway_reference", "next_attempt_at", "updated_at"])
            return top_up
        attempt.outcome = TopUpAttempt.Outcome.SUCCEEDED
        attempt.save()
        _succeed(top_up=top_up, rule=rule, gateway_reference=result.gateway_reference, now=now)
        return top_up


def _succeed(*, top_up: TopUp, rule: TopUpRule | None, gateway_reference: str, now: datetime) -> None:
    """Credit the ledger (now, and only now) and close the top-up. Caller holds the locks."""
    top_up.ledger_transaction = _credit_ledger(top_up=top_up, gateway_reference=gateway_reference, now=now)
    top_up.status, top_up.gateway_reference, top_up.next_attempt_at = TopUp.Status.SUCCEEDED, gateway_reference, None
    top_up.action_url = ""
    top_up.save()
    if rule is not None:
        rule.consecutive_failures = 0
        rule.save(update_fields=["consecutive_failures", "updated_at"])
    audit_record(action="top_up.succeeded", organization=top_up.organization, obj=top_up,
                 after={"amount": str(top_up.amount), "currency": top_up.currency, "gateway": top_up.gateway,
                        "gateway_reference": gateway_reference})  # fmt: skip


def _credit_ledger(*, top_up: TopUp, gateway_reference: str, now: datetime) -> LedgerTransaction | None:
    amount = Decimal(top_up.amount)
    if top_up.target_kind == TargetKind.WALLET:
        return wallet_top_up_credit(organization=top_up.organization, amount=amount, gateway=top_up.gateway,
                                    reference=gateway_reference, effective_at=now)  # fmt: skip
    va, org, cur = top_up.vendor_account_id, top_up.organization_id, top_up.currency
    assert va is not None
    return ledger_post(
        kind=LedgerTransaction.Kind.VENDOR_TOPUP,
        idempotency_key=f"vendor_topup:{top_up.pk}",
        entries=[(accounts.vendor_prepaid(va, org, cur), amount), (accounts.vendor_funding(va, org, cur), -amount)],
        effective_at=now,
        organization_id=org,
        vendor_account_id=va,
        description=f"Automatic top-up of {_target_label(top_up)} ({top_up.gateway} {gateway_reference})",
        metadata={"top_up": top_up.pk, "gateway": top_up.gateway, "gateway_reference": gateway_reference},
    )


def _record_failure(*, attempt_id: int, outcome: str, decline_code: str, message: str, now: datetime) -> TopUp:
    """A failed attempt: schedule the next step, or disable the rule; tell the customer either way."""
    in_flight = [TopUpAttempt.Outcome.PENDING, TopUpAttempt.Outcome.PROCESSING, TopUpAttempt.Outcome.ACTION_REQUIRED]
    with transaction.atomic():
        locked = _locked_attempt(attempt_id, in_flight)
        if locked is None:
            return TopUp.objects.get(attempts=attempt_id)
        top_up, rule, attempt = locked
        attempt.outcome, attempt.decline_code, attempt.message, attempt.finished_at = (
            outcome,
            decline_code,
            message,
            now,
        )
        attempt.save()
        top_up.last_decline_code, top_up.last_error, top_up.action_url = decline_code, message, ""
        if rule is None or not rule.enabled:
            _close(top_up, TopUp.Status.FAILED, message)
            _notify_failure(top_up=top_up, attempt=attempt, rule=rule, step=None, disabled=False)
            return top_up
        rule.consecutive_failures += 1
        step = next_step(retry_plan(rule), _failures(top_up))
        if rule.consecutive_failures >= MAX_CONSECUTIVE_FAILURES or step is None:
            reason = (
                f"Turned off after {rule.consecutive_failures} failed top-ups in a row. Last: {message}"
                if rule.consecutive_failures >= MAX_CONSECUTIVE_FAILURES
                else f"Turned off because no payment method is left to try. Last: {message}"
            )
            rule.enabled, rule.disabled_reason = False, reason
            rule.save(update_fields=["enabled", "disabled_reason", "consecutive_failures", "updated_at"])
            _close(top_up, TopUp.Status.FAILED, message)
            audit_record(action="top_up_rule.disable", organization=top_up.organization, obj=rule,
                         after={"reason": reason})  # fmt: skip
            _notify_failure(top_up=top_up, attempt=attempt, rule=rule, step=None, disabled=True)
            return top_up
        rule.save(update_fields=["consecutive_failures", "updated_at"])
        top_up.status, top_up.next_attempt_at = TopUp.Status.PENDING, now + step.delay
        top_up.save()
        _notify_failure(top_up=top_up, attempt=attempt, rule=rule, step=step, disabled=False)
        return top_up


def _record_needs_action(*, attempt_id: int, error: PaymentNeedsAction, now: datetime) -> TopUp:
    """The bank wants the customer to confirm (3-D Secure): email the link; no automatic retry."""
    with transaction.atomic():
        locked = _locked_attempt(attempt_id, [TopUpAttempt.Outcome.PENDING])
        if locked is None:
            return TopUp.objects.get(attempts=attempt_id)
        top_up, _rule, attempt = locked
        attempt.outcome, attempt.decline_code = TopUpAttempt.Outcome.ACTION_REQUIRED, "authentication_required"
        attempt.message, attempt.gateway_reference, attempt.finished_at = error.message, error.gateway_reference, now
        attempt.save()
        top_up.status, top_up.action_url = TopUp.Status.ACTION_REQUIRED, error.action_url
        top_up.gateway_reference = error.gateway_reference
        top_up.last_decline_code, top_up.last_error = "authentication_required", error.message
        top_up.next_attempt_at = now + ACTION_EXPIRY  # then the sweep cancels it
        top_up.save()
        target, amount = _target_label(top_up), money_text(top_up.amount, top_up.currency)
        _notify(
            organization=top_up.organization,
            subject=f"Confirm the automatic top-up of {target}",
            body=(
                f"Your bank asks you to confirm the automatic top-up of {target} ({amount}, charged to "
                f"{attempt.payment_method_label}).\n\nConfirm the payment here:\n{error.action_url}\n\n"
                f"The link stays valid for {ACTION_EXPIRY.days} days. Until it is confirmed or expires, no other "
                f"top-up of {target} is made.\n"
            ),
        )
        return top_up


def _record_configuration_error(*, attempt_id: int, error: PaymentConfigurationError, now: datetime) -> TopUp:
    """Our misconfiguration: log it for operators and retry later; not the customer's failure."""
    logger.error("top-up attempt %s could not be made: %s", attempt_id, error)
    with transaction.atomic():
        locked = _locked_attempt(attempt_id, [TopUpAttempt.Outcome.PENDING])
        if locked is None:
            return TopUp.objects.get(attempts=attempt_id)
        top_up, _rule, attempt = locked
        attempt.outcome, attempt.finished_at = TopUpAttempt.Outcome.ERROR, now
        attempt.message = PaymentConfigurationError.default_message
        attempt.save()
        top_up.status, top_up.next_attempt_at = TopUp.Status.PENDING, now + CONFIGURATION_RETRY
        top_up.save()
        return top_up


def _expire_action(*, top_up_id: int, now: datetime) -> None:
    with transaction.atomic():
        top_up, _rule = _lock(top_up_id=top_up_id)
        if top_up.status != TopUp.Status.ACTION_REQUIRED or (top_up.next_attempt_at or now) > now:
            return
        _close(top_up, TopUp.Status.CANCELED, f"The payment was not confirmed within {ACTION_EXPIRY.days} days.")


def _close(top_up: TopUp, status: str, message: str) -> None:
    top_up.status, top_up.last_error, top_up.next_attempt_at, top_up.action_url = status, message, None, ""
    top_up.save()


def _target_label(top_up: TopUp) -> str:
    if top_up.target_kind == TargetKind.WALLET:
        return "your prepaid wallet"
    assert top_up.vendor_account is not None
    return f"{top_up.vendor_account.label} ({top_up.vendor_account.vendor})"


# --- Emails -----------------------------------------------------------------------------------


def _portal_url() -> str:
    return f"{settings.SITE_URL}{reverse('portal:dashboard')}"


def _notify(*, organization: Organization, subject: str, body: str) -> None:
    """Email the organization's billing contacts once the transaction commits."""
    recipients = selectors.billing_contacts(organization=organization)
    if not recipients:
        logger.warning("organization %s has no owner or billing admin to tell: %s", organization.pk, subject)
        return
    send = functools.partial(send_mail, subject, f"Hello,\n\n{body}\n-- {settings.SITE_URL}\n", None, recipients)
    transaction.on_commit(send, robust=True)


def _notify_failure(
    *, top_up: TopUp, attempt: TopUpAttempt, rule: TopUpRule | None, step: Step | None, disabled: bool
) -> None:
    target, amount = _target_label(top_up), money_text(top_up.amount, top_up.currency)
    opening = (
        f"We tried to top up {target} with {amount}, charged to {attempt.payment_method_label}, "
        f"but the payment did not go through:\n\n    {attempt.message}\n\n"
    )
    if disabled and rule is not None:
        subject = f"Automatic top-ups of {target} are turned off"
        then = (
            f"After {rule.consecutive_failures} failed attempts in a row we turned automatic top-ups of {target} off, "
            f"so nothing more will be charged. To turn them back on, check the payment methods and enable the "
            f"rule again in the portal: {_portal_url()}\n"
            if rule.consecutive_failures >= MAX_CONSECUTIVE_FAILURES
            else f"No other payment method is set for this rule, so we turned automatic top-ups of {target} off. "
            f"Add a payment method and enable the rule again in the portal: {_portal_url()}\n"
        )
    elif step is not None and rule is not None:
        subject = f"Automatic top-up of {target} declined: we will try again"
        method = rule.fallback_method if step.role == "fallback" and rule.fallback_method else rule.primary_method
        due = top_up.next_attempt_at
        when = "now" if step.delay == timedelta(0) or due is None else f"on {due:%Y-%m-%d} (UTC)"
        left = MAX_CONSECUTIVE_FAILURES - rule.consecutive_failures
        then = (
            f"We will try again {when} with {method.label}. If {left} more attempt{'s' if left > 1 else ''} "
            f"fail{'' if left > 1 else 's'}, automatic top-ups of {target} are turned off. To pay with another "
            f"method, change the rule in the portal: {_portal_url()}\n"
        )
    else:
        subject = f"Automatic top-up of {target} failed"
        then = f"Automatic top-ups of {target} are off, so we will not try again. Portal: {_portal_url()}\n"
    _notify(organization=top_up.organization, subject=subject, body=opening + then)


# --- Rules ------------------------------------------------------------------------------------


class TopUpRuleData(TypedDict, total=False):
    """The writable fields of a rule (all of them to create one, any of them to change one)."""

    target_kind: str
    vendor_account: VendorAccount | None
    currency: str
    trigger: str
    threshold_amount: Decimal | None
    threshold_days: Decimal | None
    method: str
    amount: Decimal | None
    target_balance: Decimal | None
    minimum_amount: Decimal
    maximum_amount: Decimal | None
    monthly_cap: Decimal | None
    primary_method: PaymentMethod
    fallback_method: PaymentMethod | None
    enabled: bool


@transaction.atomic
def top_up_rule_create(
    *, organization: Organization, data: TopUpRuleData, actor: User | None = None, actor_api_key: ApiKey | None = None
) -> TopUpRule:
    """Create a rule, after checking it can work; evaluate it right away (a balance already below
    the threshold tops up at once)."""
    rule = TopUpRule(organization=organization)
    for name, value in data.items():
        setattr(rule, name, value)
    _validate(rule)
    rule.save()
    audit_record(action="top_up_rule.create", organization=organization, actor=actor, actor_api_key=actor_api_key,
                 obj=rule, after=_audit_fields(rule))  # fmt: skip
    _evaluate_on_commit(rule)
    return rule


@transaction.atomic
def top_up_rule_update(
    *, rule: TopUpRule, data: TopUpRuleData, actor: User | None = None, actor_api_key: ApiKey | None = None
) -> TopUpRule:
    """Change a rule. Enabling it again clears its failures; disabling it cancels its top-ups that
    are not being charged."""
    rule = TopUpRule.objects.select_for_update(of=("self",)).select_related("organization").get(pk=rule.pk)
    before = _audit_fields(rule)
    was_enabled = rule.enabled
    for name, value in data.items():
        setattr(rule, name, value)
    if "currency" not in data and ("vendor_account" in data or "target_kind" in data):
        rule.currency = ""  # derived again from the new target
    _validate(rule)
    if rule.enabled and not was_enabled:
        rule.consecutive_failures, rule.disabled_reason = 0, ""
    rule.save()
    if was_enabled and not rule.enabled:
        _cancel_waiting(rule, "Automatic top-ups were turned off.")
    audit_record(action="top_up_rule.update", organization=rule.organization, actor=actor, actor_api_key=actor_api_key,
                 obj=rule, before=before, after=_audit_fields(rule))  # fmt: skip
    _evaluate_on_commit(rule)
    return rule


@transaction.atomic
def top_up_rule_delete(*, rule: TopUpRule, actor: User | None = None, actor_api_key: ApiKey | None = None) -> None:
    """Delete a rule; its top-ups stay as history, those not being charged are canceled."""
    rule = TopUpRule.objects.select_for_update(of=("self",)).select_related("organization").get(pk=rule.pk)
    _cancel_waiting(rule, "The automatic top-up rule was deleted.")
    audit_record(action="top_up_rule.delete", organization=rule.organization, actor=actor, actor_api_key=actor_api_key,
                 obj=rule, before=_audit_fields(rule))  # fmt: skip
    rule.delete()


def _cancel_waiting(rule: TopUpRule, message: str) -> None:
    # A top-up with an attempt in flight (processing) finishes: the gateway may already have charged.
    waiting = rule.top_ups.filter(status__in=[TopUp.Status.PENDING, TopUp.Status.ACTION_REQUIRED])
    waiting.update(status=TopUp.Status.CANCELED, last_error=message, next_attempt_at=None, action_url="",
                   updated_at=timezone.now())  # fmt: skip


def _evaluate_on_commit(rule: TopUpRule) -> None:
    if not rule.enabled:
        return
    if rule.target_kind == TargetKind.WALLET:
        top_up_rules_evaluate_task.delay_on_commit(organization_id=rule.organization_id)
    else:
        top_up_rules_evaluate_task.delay_on_commit(vendor_account_id=rule.vendor_account_id)


def _audit_fields(rule: TopUpRule) -> dict[str, Any]:
    names = ["target_kind", "vendor_account_id", "currency", "trigger", "threshold_amount", "threshold_days", "method",
             "amount", "target_balance", "minimum_amount", "maximum_amount", "monthly_cap", "primary_method_id",
             "fallback_method_id", "enabled"]  # fmt: skip
    return {name: None if getattr(rule, name) is None else str(getattr(rule, name)) for name in names}


def _validate(rule: TopUpRule) -> None:
    """Every reason the rule could not work, by field, each saying what to fix."""
    errors: dict[str, str] = {}
    org = rule.organization
    _validate_target(rule, org, errors)
    amounts = ["threshold_amount", "amount", "target_balance", "minimum_amount", "maximum_amount", "monthly_cap"]
    if rule.minimum_amount is None:
        rule.minimum_amount = Decimal(0)
    if "currency" not in errors:
        for name in amounts:
            value = getattr(rule, name)
            if value is not None and quantize(value, rule.currency, rounding="ROUND_HALF_UP") != value:
                errors[name] = f"has more decimals than {rule.currency} allows: round it to the currency's minor unit."
    if rule.trigger == TopUpRule.Trigger.BALANCE_BELOW:
        if rule.threshold_amount is None or rule.threshold_amount <= 0:
            errors["threshold_amount"] = "must be a positive amount for the balance_below trigger, e.g. 100.00."
    elif rule.trigger == TopUpRule.Trigger.RUNWAY_BELOW:
        if rule.threshold_days is None or rule.threshold_days <= 0:
            errors["threshold_days"] = "must be a positive number of days for the runway_below trigger, e.g. 7."
    else:
        errors["trigger"] = "choose balance_below (an amount) or runway_below (days of runway left)."
    if rule.method == TopUpRule.Method.FIXED:
        if rule.amount is None or rule.amount <= 0:
            errors["amount"] = "must be a positive amount for a fixed top-up, e.g. 500.00."
    elif rule.method == TopUpRule.Method.TARGET_BALANCE:
        if rule.target_balance is None or rule.target_balance <= 0:
            errors["target_balance"] = "must be a positive amount to top up to, e.g. 1000.00."
        elif (rule.trigger == TopUpRule.Trigger.BALANCE_BELOW and rule.threshold_amount is not None
              and rule.target_balance <= rule.threshold_amount):  # fmt: skip
            errors["target_balance"] = (
                f"must be above threshold_amount ({rule.threshold_amount.normalize():f}): otherwise each top-up "
                "leaves the balance below the threshold."
            )
    else:
        errors["method"] = "choose fixed (the same amount each time) or target_balance (up to a balance)."
    minimum, maximum = rule.minimum_amount, rule.maximum_amount
    if minimum < 0:
        errors["minimum_amount"] = "cannot be negative: use 0 for no minimum."
    if maximum is not None and maximum <= 0:
        errors["maximum_amount"] = "must be positive, or empty for no maximum."
    elif maximum is not None and minimum > maximum:
        errors["minimum_amount"] = f"must not be above maximum_amount ({maximum.normalize():f})."
    elif (
        rule.method == TopUpRule.Method.FIXED
        and rule.amount is not None
        and "amount" not in errors
        and (rule.amount < minimum or (maximum is not None and rule.amount > maximum))
    ):
        errors["amount"] = "must be between minimum_amount and maximum_amount."
    if rule.monthly_cap is not None:
        if rule.monthly_cap <= 0:
            errors["monthly_cap"] = "must be positive, or empty for no cap."
        elif rule.monthly_cap < minimum:
            errors["monthly_cap"] = (
                f"is below minimum_amount ({minimum.normalize():f}), so no top-up could ever be made: raise the cap "
                "or lower the minimum."
            )
    _validate_methods(rule, org, errors)
    if errors:
        raise TopUpRuleInvalid(errors)


def _validate_target(rule: TopUpRule, org: Organization, errors: dict[str, str]) -> None:
    if rule.target_kind == TargetKind.VENDOR_ACCOUNT:
        account = rule.vendor_account
        if account is None:
            errors["vendor_account"] = "choose the vendor account to top up, or set target_kind to wallet."
            return
        if account.organization_id != org.pk:
            errors["vendor_account"] = f"vendor account {account.pk} is not one of your organization's accounts."
            return
        if not rule.currency:
            rule.currency = vendor_account_runway(vendor_account=account, today=timezone.now().date()).currency
        label = f"{account.label} already"
        same_target = Q(target_kind=TargetKind.VENDOR_ACCOUNT, vendor_account=account)
    elif rule.target_kind == TargetKind.WALLET:
        if rule.vendor_account is not None:
            errors["vendor_account"] = "leave it empty for a wallet rule."
        if not _has_wallet(org):
            errors["target_kind"] = (
                "this organization is invoiced monthly, so it has no prepaid wallet to top up: top up a vendor "
                "account instead."
            )
        if rule.currency and rule.currency.upper() != org.currency:
            errors["currency"] = f"the wallet is kept in {org.currency}: use {org.currency} or leave currency empty."
        rule.currency = org.currency
        label = "The wallet already"
        same_target = Q(target_kind=TargetKind.WALLET)
    else:
        errors["target_kind"] = "choose vendor_account or wallet."
        return
    try:
        rule.currency = currency_code(rule.currency)
    except CurrencyError as exc:
        errors["currency"] = str(exc)
    others = TopUpRule.objects.filter(same_target, organization=org, enabled=True).exclude(pk=rule.pk)
    other = others.values_list("pk", flat=True).first()
    if rule.enabled and other is not None:
        errors["enabled"] = f"{label} has an enabled top-up rule ({other}): change that rule, or disable it first."


def _validate_methods(rule: TopUpRule, org: Organization, errors: dict[str, str]) -> None:
    today = timezone.now().date()
    for name in ("primary_method", "fallback_method"):
        method: PaymentMethod | None = getattr(rule, name, None) if getattr(rule, f"{name}_id") else None
        if method is None:
            if name == "primary_method":
                errors[name] = "choose the payment method to charge."
            continue
        if method.organization_id != org.pk:
            errors[name] = f"payment method {method.pk} is not one of your organization's payment methods."
        elif method.expired_on(today):
            errors[name] = f"{method.label} expired in {method.exp_month:02d}/{method.exp_year}: add a new one."
        else:
            try:
                gateway_for(method.gateway)
            except PaymentConfigurationError:
                errors[name] = f"payments through {method.gateway} are not available: choose another method."
    if rule.fallback_method_id is not None and rule.fallback_method_id == rule.primary_method_id:
        errors["fallback_method"] = "must be a different payment method from primary_method, or empty."


# --- Payment methods --------------------------------------------------------------------------


@transaction.atomic
def payment_method_save(
    *, organization: Organization, gateway: str, token: str, customer_reference: str, make_default: bool = False,
    actor: User | None = None, actor_api_key: ApiKey | None = None,
) -> PaymentMethod:  # fmt: skip
    """Save a client-side token (Stripe Elements, Google Pay) as a payment method for off-session
    charges. Only the gateway's reference and display details are stored."""
    result = gateway_for(gateway).save_payment_method(
        SetupRequest(token=token, customer_reference=customer_reference,
                     idempotency_key=f"payment_method:{organization.pk}:{token}")
    )  # fmt: skip
    if result.status != "succeeded":  # nothing is stored that could not be charged
        raise PaymentNeedsAction(
            result.action_url,
            "Your bank wants to confirm this card before it is saved: add it on the Payment methods page, "
            "where your bank can ask you.",
            gateway_reference=result.gateway_reference,
        )  # fmt: skip
    method, _created = PaymentMethod.objects.update_or_create(
        gateway=gateway, gateway_reference=result.gateway_reference,
        defaults={"organization": organization, "customer_reference": customer_reference, **result.stored_fields()},
    )  # fmt: skip
    if make_default or not PaymentMethod.objects.filter(organization=organization, is_default=True).exists():
        method = payment_method_set_default(payment_method=method, is_default=True, actor=actor,
                                            actor_api_key=actor_api_key)  # fmt: skip
    audit_record(action="payment_method.save", organization=organization, actor=actor, actor_api_key=actor_api_key,
                 obj=method, after={"gateway": gateway, "label": method.label})  # fmt: skip
    return method


@transaction.atomic
def payment_method_set_default(
    *, payment_method: PaymentMethod, is_default: bool, actor: User | None = None, actor_api_key: ApiKey | None = None
) -> PaymentMethod:
    """Make the method the organization's default (the previous default stops being it), or not.
    A fallback that becomes the default stops being the fallback."""
    if is_default:
        PaymentMethod.objects.filter(organization_id=payment_method.organization_id, is_default=True).exclude(
            pk=payment_method.pk
        ).update(is_default=False)
        payment_method.is_fallback = False
    payment_method.is_default = is_default
    payment_method.save(update_fields=["is_default", "is_fallback"])
    audit_record(action="payment_method.update", organization=payment_method.organization, actor=actor,
                 actor_api_key=actor_api_key, obj=payment_method, after={"is_default": is_default})  # fmt: skip
    return payment_method


@transaction.atomic
def payment_method_delete(
    *, payment_method: PaymentMethod, actor: User | None = None, actor_api_key: ApiKey | None = None
) -> None:
    """Forget a payment method. Refused while a top-up rule charges it first; a rule that has it as
    fallback simply loses its fallback."""
    rules = list(payment_method.top_up_rules_primary.select_related("vendor_account").order_by("pk"))
    if rules:
        names = ", ".join(f"{r.pk} ({r.target_label})" for r in rules)
        raise PaymentMethodInUse(
            f"{payment_method.label} pays top-up rule{'s' if len(rules) > 1 else ''} {names}: choose another "
            "primary payment method for them, or delete them, first."
        )
    audit_record(action="payment_method.delete", organization=payment_method.organization, actor=actor,
                 actor_api_key=actor_api_key, obj=payment_method, before={"label": payment_method.label})  # fmt: skip
    payment_method.delete()

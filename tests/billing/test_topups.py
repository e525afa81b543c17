"""Automatic top-ups: rules, the charges they make through the gateway contract, retries,
fallback, disabling, emails, crash safety and the API."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core import mail
from django.db import IntegrityError, connection, transaction
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from aggregator.tenancy.models import Organization, Role, User
from billing.ledger import accounts, flows
from billing.ledger.models import LedgerTransaction
from billing.ledger.posting import ledger_post
from billing.ledger.selectors import balance_of, wallet_runway
from billing.ledger.services import credit_purchase_record, wallet_top_up_credit
from billing.payments.gateways import FAKE_GATEWAY, gateway_for
from billing.payments.gateways.base import (
    ChargeRequest,
    PaymentConfigurationError,
    PaymentDeclined,
    PaymentNeedsAction,
    WebhookInvalid,
)
from billing.payments.gateways.fake import FakeGateway
from billing.payments.models import PaymentMethod
from billing.topups import selectors, services, tasks
from billing.topups.models import TopUp, TopUpAttempt, TopUpRule
from billing.topups.services import after_settlement, top_up_charge, top_up_retry_due, top_up_rules_evaluate
from providers.models import VendorAccount
from tests.billing.conftest import cost
from tests.factories import (
    MembershipFactory,
    OrganizationFactory,
    PaymentMethodFactory,
    TopUpFactory,
    TopUpRuleFactory,
    VendorAccountFactory,
)

TODAY = date(2026, 11, 20)
T0 = datetime(2026, 11, 1, tzinfo=UTC)

with_routes = pytest.mark.django_db  # the routes are in aggregator/api/urls.py


# --- Helpers and fixtures ---------------------------------------------------------------------


@pytest.fixture(autouse=True)
def payment_gateways(settings: Any) -> None:
    # Tests run with DEBUG off (pytest-django), so configure the test gateway explicitly.
    settings.PAYMENT_GATEWAYS = [FAKE_GATEWAY]


@pytest.fixture
def fake() -> Iterator[FakeGateway]:
    gateway = gateway_for("fake")
    assert isinstance(gateway, FakeGateway)
    gateway.reset()
    yield gateway
    gateway.reset()


@pytest.fixture
def contacts(organization: Organization, owner: User, viewer: User) -> list[str]:
    """Who hears about top-ups: the owner and the billing admin, not the viewer."""
    MembershipFactory(organization=organization, role=Role.BILLING_ADMIN, user__email="admin@acme.test")
    return ["owner@acme.test", "admin@acme.test"]


@pytest.fixture
def vendor_account(organization: Organization) -> VendorAccount:
    return VendorAccountFactory(organization=organization, vendor="openai", label="OpenAI")


@pytest.fixture
def wallet_org(db: Any) -> Organization:
    org: Organization = OrganizationFactory(slug="initech", currency="EUR", billing_mode="prepaid_wallet")
    MembershipFactory(organization=org, role=Role.OWNER, user__email="owner@initech.test")
    return org


def fund(account: VendorAccount, amount: str) -> None:
    """Credits bought at the vendor: the prepaid balance grows."""
    credit_purchase_record(vendor_account=account, amount=Decimal(amount), currency="USD", kind="purchase",
                           effective_at=T0)  # fmt: skip


def spend(account: VendorAccount, day: date, amount: str) -> None:
    """A settled day of consumption: the balance shrinks and the burn rate grows."""
    va, org = account.pk, account.organization_id
    ledger_post(kind=LedgerTransaction.Kind.CONSUMPTION, idempotency_key=f"test-spend:{va}:{day}",
                entries=[(accounts.vendor_consumption(va, org, "USD"), Decimal(amount)),
                         (accounts.vendor_prepaid(va, org, "USD"), -Decimal(amount))],
                effective_at=datetime.combine(day, datetime.min.time(), tzinfo=UTC), settlement_day=day,
                organization_id=org, vendor_account_id=va)  # fmt: skip


def prepaid(account: VendorAccount) -> Decimal:
    return balance_of(key=accounts.vendor_prepaid(account.pk, account.organization_id, "USD").key)


def rule_for(account: VendorAccount, **fields: Any) -> TopUpRule:
    return TopUpRuleFactory(organization=account.organization, vendor_account=account, **fields)


def method(organization: Organization, reference: str, **fields: Any) -> PaymentMethod:
    return PaymentMethodFactory(organization=organization, gateway_reference=reference, **fields)


def evaluate(account: VendorAccount) -> list[TopUp]:
    return top_up_rules_evaluate(vendor_account=account, today=TODAY)


# --- Evaluation -------------------------------------------------------------------------------


def test_a_shortfall_creates_one_top_up_of_the_fixed_amount(
    vendor_account: VendorAccount, django_capture_on_commit_callbacks: Any
) -> None:
    fund(vendor_account, "80.00")
    rule = rule_for(vendor_account, threshold_amount=Decimal("100.00"), amount=Decimal("500.00"))
    with django_capture_on_commit_callbacks() as queued:
        (top_up,) = evaluate(vendor_account)
    assert (top_up.amount, top_up.currency, top_up.status, top_up.rule) == (Decimal("500.00"), "USD", "pending", rule)
    assert (top_up.target_kind, top_up.vendor_account, top_up.month) == ("vendor_account", vendor_account,
                                                                         date(2026, 11, 1))  # fmt: skip
    assert len(queued) == 1  # the charge, queued once the top-up is committed
    assert prepaid(vendor_account) == Decimal("80.00")  # nothing credited before a payment


def test_no_top_up_while_the_balance_is_at_or_above_the_threshold(vendor_account: VendorAccount) -> None:
    fund(vendor_account, "100.00")
    rule_for(vendor_account, threshold_amount=Decimal("100.00"))
    assert evaluate(vendor_account) == []


def test_target_balance_tops_up_the_difference_rounded_up_to_the_cent(vendor_account: VendorAccount) -> None:
    fund(vendor_account, "80.004")
    rule_for(vendor_account, method="target_balance", amount=None, target_balance=Decimal("1000.00"))
    (top_up,) = evaluate(vendor_account)
    assert top_up.amount == Decimal("920.00")  # 919.996 rounded up, so the target is reached


@pytest.mark.parametrize(
    ("balance", "minimum", "maximum", "expected"),
    [("80.00", "0", "600.00", "600.00"), ("95.00", "50.00", None, "50.00"), ("95.00", "0", None, "25.00")],
)
def test_the_amount_is_clamped_to_the_minimum_and_maximum(
    vendor_account: VendorAccount, balance: str, minimum: str, maximum: str | None, expected: str
) -> None:
    fund(vendor_account, balance)
    rule_for(vendor_account, method="target_balance", amount=None, target_balance=Decimal("120.00"),
             minimum_amount=Decimal(minimum), maximum_amount=Decimal(maximum) if maximum else None)  # fmt: skip
    if maximum:
        TopUpRule.objects.update(target_balance=Decimal("1000.00"))
    (top_up,) = evaluate(vendor_account)
    assert top_up.amount == Decimal(expected)


def test_the_monthly_cap_limits_the_top_up_to_what_is_left(vendor_account: VendorAccount) -> None:
    fund(vendor_account, "80.00")
    rule = rule_for(vendor_account, monthly_cap=Decimal("800.00"))
    TopUpFactory(rule=rule, organization=rule.organization, amount=Decimal("500.00"), status="succeeded")
    TopUpFactory(rule=rule, organization=rule.organization, amount=Decimal("700.00"), status="succeeded",
                 month=date(2026, 10, 1))  # last month's does not count  # fmt: skip
    TopUpFactory(rule=rule, organization=rule.organization, amount=Decimal("400.00"), status="failed")
    (top_up,) = evaluate(vendor_account)
    assert top_up.amount == Decimal("300.00")


def test_a_cap_that_leaves_less_than_the_minimum_skips_and_says_why(vendor_account: VendorAccount) -> None:
    fund(vendor_account, "80.00")
    rule = rule_for(vendor_account, monthly_cap=Decimal("800.00"), minimum_amount=Decimal("400.00"))
    TopUpFactory(rule=rule, organization=rule.organization, amount=Decimal("500.00"), status="succeeded")
    assert evaluate(vendor_account) == []
    rule.refresh_from_db()
    assert rule.status_message == (
        "Not topped up on 2026-11-20: the monthly cap of 800.00 USD leaves 300.00 USD, less than the minimum top-up "
        "of 400.00 USD. Raise the cap to top up this month."
    )


def test_an_open_top_up_counts_toward_the_balance_so_a_second_evaluation_creates_none(
    vendor_account: VendorAccount,
) -> None:
    fund(vendor_account, "80.00")
    rule_for(vendor_account, method="target_balance", amount=None, target_balance=Decimal("1000.00"))
    assert [t.amount for t in evaluate(vendor_account)] == [Decimal("920.00")]
    assert evaluate(vendor_account) == []
    assert evaluate(vendor_account) == []
    assert TopUp.objects.count() == 1


def test_a_disconnected_accounts_rule_does_nothing(vendor_account: VendorAccount) -> None:
    fund(vendor_account, "80.00")
    rule = rule_for(vendor_account)
    VendorAccount.objects.filter(pk=vendor_account.pk).update(status=VendorAccount.Status.DISABLED)
    assert evaluate(vendor_account) == []
    rule.refresh_from_db()
    assert rule.status_message == "Not topped up: the vendor account is disabled or disconnected."


def test_the_database_allows_one_open_top_up_per_rule(vendor_account: VendorAccount) -> None:
    rule = rule_for(vendor_account)
    TopUpFactory(rule=rule, organization=rule.organization, status="succeeded")
    TopUpFactory(rule=rule, organization=rule.organization, status="pending")
    for status in ("pending", "processing", "action_required"):
        with pytest.raises(IntegrityError), transaction.atomic():
            TopUpFactory(rule=rule, organization=rule.organization, status=status)
    TopUpFactory(rule=rule, organization=rule.organization, status="failed")


def test_an_evaluation_that_loses_the_race_to_the_constraint_creates_nothing(
    vendor_account: VendorAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two evaluations that both read the balance before either committed: the second insert hits the
    # one-open-top-up constraint, which the service takes as "already covered".
    fund(vendor_account, "80.00")
    rule_for(vendor_account)
    monkeypatch.setattr(selectors, "open_top_ups_amount", lambda *, rule: Decimal(0))
    assert len(evaluate(vendor_account)) == 1
    assert evaluate(vendor_account) == []
    assert TopUp.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_many_concurrent_evaluations_create_exactly_one_top_up(monkeypatch: pytest.MonkeyPatch) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("SQLite serializes writers on one file lock, so threads cannot race; run on PostgreSQL")
    account = VendorAccountFactory()
    fund(account, "80.00")
    rule_for(account)
    monkeypatch.setattr(tasks.top_up_charge_task, "delay_on_commit", lambda *args, **kwargs: None)
    start, created, errors = threading.Barrier(8), [], []

    def run() -> None:
        try:
            start.wait()
            created.extend(top_up_rules_evaluate(vendor_account=account, today=TODAY))
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(created) == 1
    assert TopUp.objects.filter(rule__vendor_account=account).count() == 1


def test_wallet_rules_watch_the_wallet_balance(wallet_org: Organization) -> None:
    wallet_top_up_credit(organization=wallet_org, amount=Decimal("20.00"), gateway="fake", reference="pi_0",
                         effective_at=T0)  # fmt: skip
    rule = TopUpRuleFactory(organization=wallet_org, target_kind="wallet", vendor_account=None, currency="EUR",
                            threshold_amount=Decimal("50.00"), amount=Decimal("200.00"))  # fmt: skip
    assert top_up_rules_evaluate(vendor_account=None, organization=wallet_org, today=TODAY)[0].amount == Decimal("200")
    assert TopUp.objects.get().rule == rule


def test_runway_rules_fire_when_fewer_days_are_left(vendor_account: VendorAccount) -> None:
    fund(vendor_account, "300.00")
    for i in range(1, 15):
        spend(vendor_account, TODAY - timedelta(days=i), "20.00")  # 280 spent: 20.00 left, 1 day of runway
    rule_for(vendor_account, trigger="runway_below", threshold_amount=None, threshold_days=Decimal("7"))
    (top_up,) = evaluate(vendor_account)
    assert top_up.amount == Decimal("500.00")
    rule = TopUpRule.objects.get()
    assert selectors.top_up_rule_preview(rule=rule, today=TODAY) == (
        "At the current burn rate of 20.00 USD a day this tops up 500.00 USD about every 25 days."
    )


def test_settlement_runs_the_top_up_hook(vendor_account: VendorAccount, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flows, "AFTER_SETTLEMENT", [after_settlement])
    fund(vendor_account, "120.00")
    rule_for(vendor_account)
    cost(vendor_account, timezone.now().date() - timedelta(days=1), "30.00")
    flows.vendor_account_settle(vendor_account_id=vendor_account.pk)
    assert prepaid(vendor_account) == Decimal("90.00")
    assert TopUp.objects.get().amount == Decimal("500.00")


# --- Charging ---------------------------------------------------------------------------------


def open_top_up(account: VendorAccount, primary: str = "pm_ok", fallback: str | None = None, **fields: Any) -> TopUp:
    org = account.organization
    rule = rule_for(account, primary_method=method(org, primary),
                    fallback_method=method(org, fallback, brand="mastercard", last4="5555") if fallback else None,
                    **fields)  # fmt: skip
    fund(account, "80.00")
    (top_up,) = top_up_rules_evaluate(vendor_account=account, today=TODAY)
    assert top_up.rule == rule
    return top_up


def test_success_credits_the_vendor_account_once(vendor_account: VendorAccount, fake: FakeGateway) -> None:
    top_up = open_top_up(vendor_account)
    assert prepaid(vendor_account) == Decimal("80.00")
    top_up = top_up_charge(top_up_id=top_up.pk)
    assert top_up.status == "succeeded"
    assert prepaid(vendor_account) == Decimal("580.00")
    tx = LedgerTransaction.objects.get(kind="vendor_topup")
    assert (tx.idempotency_key, top_up.ledger_transaction) == (f"vendor_topup:{top_up.pk}", tx)
    funding = accounts.vendor_funding(vendor_account.pk, vendor_account.organization_id, "USD").key
    assert balance_of(key=funding) == Decimal("-580.00")  # the 80.00 bought before, and the top-up
    top_up_charge(top_up_id=top_up.pk)  # a duplicate delivery of the task
    assert prepaid(vendor_account) == Decimal("580.00")
    assert len(fake.charges) == 1
    (request,) = fake.requests
    assert (request.amount, request.currency, request.payment_method, request.off_session) == (
        Decimal("500.00"), "USD", "pm_ok", True)  # fmt: skip
    assert request.idempotency_key == f"topup:{top_up.pk}:attempt:1"


def test_success_credits_the_wallet_once(wallet_org: Organization, fake: FakeGateway) -> None:
    TopUpRuleFactory(organization=wallet_org, target_kind="wallet", vendor_account=None, currency="EUR",
                     threshold_amount=Decimal("50.00"), amount=Decimal("200.00"))  # fmt: skip
    (top_up,) = top_up_rules_evaluate(organization=wallet_org, today=TODAY)
    assert wallet_runway(organization=wallet_org, today=TODAY).balance == Decimal("0")
    top_up = top_up_charge(top_up_id=top_up.pk)
    top_up_charge(top_up_id=top_up.pk)
    assert wallet_runway(organization=wallet_org, today=TODAY).balance == Decimal("200.00")
    tx = LedgerTransaction.objects.get(kind="wallet_topup")
    assert tx.idempotency_key == f"wallet_topup:fake:{top_up.gateway_reference}"
    assert top_up.ledger_transaction == tx


def test_a_processing_charge_is_credited_only_when_the_gateway_confirms_it(
    vendor_account: VendorAccount, fake: FakeGateway
) -> None:
    top_up = top_up_charge(top_up_id=open_top_up(vendor_account, "pm_processing").pk)
    assert (top_up.status, top_up.next_attempt_at) == ("processing", None)
    assert prepaid(vendor_account) == Decimal("80.00")
    assert evaluate(vendor_account) == []  # still open: counts toward the balance
    body, headers = fake.webhook(event_id="evt_1", event_type="charge.succeeded", reference=top_up.gateway_reference)
    event = fake.parse_webhook(body, headers)
    for _ in range(2):  # delivered twice
        services.top_up_payment_confirm(gateway="fake", gateway_reference=event.gateway_reference)
    assert prepaid(vendor_account) == Decimal("580.00")
    assert TopUp.objects.get().status == "succeeded"


def test_declines_retry_then_fall_back_then_disable_the_rule_emailing_each_time(
    vendor_account: VendorAccount, fake: FakeGateway, contacts: list[str], django_capture_on_commit_callbacks: Any
) -> None:
    top_up = open_top_up(vendor_account, "pm_decline_insufficient_funds", "pm_decline_do_not_honor")
    now = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        top_up = top_up_charge(top_up_id=top_up.pk, now=now)
    rule = TopUpRule.objects.get()
    assert (top_up.status, top_up.next_attempt_at, rule.consecutive_failures) == ("pending", now + timedelta(days=1), 1)
    assert top_up.last_decline_code == "insufficient_funds"
    (first,) = mail.outbox
    assert first.to == contacts
    assert first.subject == "Automatic top-up of OpenAI (openai) declined: we will try again"
    assert "The card has insufficient funds." in first.body
    assert f"We will try again on {now + timedelta(days=1):%Y-%m-%d} (UTC) with Visa •••• 4242." in first.body

    top_up_charge(top_up_id=top_up.pk, now=now + timedelta(hours=1))  # not due yet: nothing happens
    assert len(fake.requests) == 1

    with django_capture_on_commit_callbacks(execute=True):
        top_up_retry_due(now=now + timedelta(days=1))  # the primary again, then the fallback at once
    top_up.refresh_from_db()
    rule.refresh_from_db()
    attempts = list(top_up.attempts.order_by("number"))
    assert [a.payment_method_reference for a in attempts] == [
        "pm_decline_insufficient_funds", "pm_decline_insufficient_funds", "pm_decline_do_not_honor"]  # fmt: skip
    assert [a.is_fallback for a in attempts] == [False, False, True]
    assert [r.idempotency_key for r in fake.requests] == [f"topup:{top_up.pk}:attempt:{n}" for n in (1, 2, 3)]
    assert (top_up.status, top_up.attempt_count, top_up.next_attempt_at) == ("failed", 3, None)
    assert (rule.enabled, rule.consecutive_failures) == (False, 3)
    assert rule.disabled_reason.startswith("Turned off after 3 failed top-ups in a row.")
    assert [m.subject for m in mail.outbox] == [
        "Automatic top-up of OpenAI (openai) declined: we will try again",
        "Automatic top-up of OpenAI (openai) declined: we will try again",
        "Automatic top-ups of OpenAI (openai) are turned off",
    ]
    assert all(m.to == contacts for m in mail.outbox)
    assert "We will try again now with Mastercard •••• 5555." in mail.outbox[1].body
    assert "without giving a reason" in mail.outbox[2].body
    assert "After 3 failed attempts in a row we turned automatic top-ups of OpenAI (openai) off" in mail.outbox[2].body
    assert prepaid(vendor_account) == Decimal("80.00")
    assert evaluate(vendor_account) == []  # a disabled rule does nothing


def test_a_hard_decline_moves_to_the_fallback_at_once_and_success_resets_the_failures(
    vendor_account: VendorAccount, fake: FakeGateway, contacts: list[str], django_capture_on_commit_callbacks: Any
) -> None:
    top_up = open_top_up(vendor_account, "pm_decline_expired_card", "pm_ok")
    with django_capture_on_commit_callbacks(execute=True):
        top_up_charge(top_up_id=top_up.pk)
    top_up.refresh_from_db()
    assert top_up.status == "succeeded"
    assert [(a.number, a.outcome, a.decline_code) for a in top_up.attempts.all()] == [
        (1, "declined", "expired_card"), (2, "succeeded", "")]  # fmt: skip
    assert TopUpRule.objects.get().consecutive_failures == 0
    assert prepaid(vendor_account) == Decimal("580.00")
    (email,) = mail.outbox
    assert "The card has expired. Add a new card in the portal." in email.body


def test_a_hard_decline_without_a_fallback_turns_the_rule_off(
    vendor_account: VendorAccount, fake: FakeGateway, contacts: list[str], django_capture_on_commit_callbacks: Any
) -> None:
    top_up = open_top_up(vendor_account, "pm_decline_stolen_card")
    with django_capture_on_commit_callbacks(execute=True):
        top_up_charge(top_up_id=top_up.pk)
    rule = TopUpRule.objects.get()
    assert (rule.enabled, TopUp.objects.get().status) == (False, "failed")
    (email,) = mail.outbox
    # A stolen-card decline reads as a generic decline: the recipient is not always the cardholder.
    assert "Your bank declined the payment. Contact your bank or use another payment method." in email.body
    assert "No other payment method is set for this rule" in email.body


def test_a_temporary_failure_is_retried_on_the_schedule(vendor_account: VendorAccount, fake: FakeGateway) -> None:
    now = timezone.now()
    top_up = top_up_charge(top_up_id=open_top_up(vendor_account, "pm_temporary").pk, now=now)
    assert (top_up.status, top_up.next_attempt_at) == ("pending", now + timedelta(days=1))
    assert top_up.attempts.get().outcome == "temporary_failure"


def test_needs_action_emails_the_link_and_waits_for_the_customer(
    vendor_account: VendorAccount, fake: FakeGateway, contacts: list[str], django_capture_on_commit_callbacks: Any
) -> None:
    now = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        top_up = top_up_charge(top_up_id=open_top_up(vendor_account, "pm_needs_action").pk, now=now)
    assert (top_up.status, top_up.last_decline_code) == ("action_required", "authentication_required")
    assert top_up.action_url == f"https://fake-gateway.invalid/authenticate/{top_up.gateway_reference}"
    (email,) = mail.outbox
    assert (email.to, email.subject) == (contacts, "Confirm the automatic top-up of OpenAI (openai)")
    assert top_up.action_url in email.body
    assert TopUpRule.objects.get().consecutive_failures == 0
    assert evaluate(vendor_account) == []
    top_up_retry_due(now=now + timedelta(days=1))  # no automatic retry of an authentication request
    assert len(fake.requests) == 1
    services.top_up_payment_confirm(gateway="fake", gateway_reference=top_up.gateway_reference)  # confirmed
    assert prepaid(vendor_account) == Decimal("580.00")


def test_an_unconfirmed_payment_is_canceled_after_seven_days(vendor_account: VendorAccount, fake: FakeGateway) -> None:
    now = timezone.now()
    top_up = top_up_charge(top_up_id=open_top_up(vendor_account, "pm_needs_action").pk, now=now)
    top_up_retry_due(now=now + timedelta(days=7))
    top_up.refresh_from_db()
    assert (top_up.status, top_up.last_error) == ("canceled", "The payment was not confirmed within 7 days.")
    assert len(top_up_rules_evaluate(vendor_account=vendor_account, today=TODAY)) == 1


def test_a_crash_after_the_gateway_charged_is_credited_once_when_run_again(
    vendor_account: VendorAccount, fake: FakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    top_up = open_top_up(vendor_account)
    real_credit = services._credit_ledger
    monkeypatch.setattr(services, "_credit_ledger", lambda **kwargs: (_ for _ in ()).throw(RuntimeError("killed")))
    now = timezone.now()
    with pytest.raises(RuntimeError):
        top_up_charge(top_up_id=top_up.pk, now=now)
    top_up.refresh_from_db()
    assert (top_up.status, top_up.attempts.get().outcome) == ("processing", "pending")
    assert (len(fake.charges), prepaid(vendor_account)) == (1, Decimal("80.00"))  # charged, not credited

    monkeypatch.setattr(services, "_credit_ledger", real_credit)
    top_up_charge(top_up_id=top_up.pk, now=now + timedelta(minutes=5))  # still leased: left alone
    assert len(fake.requests) == 1
    top_up_retry_due(now=now + timedelta(minutes=16))  # the sweep repeats the interrupted attempt
    top_up.refresh_from_db()
    assert top_up.status == "succeeded"
    assert [r.idempotency_key for r in fake.requests] == [f"topup:{top_up.pk}:attempt:1"] * 2
    assert len(fake.charges) == 1
    assert prepaid(vendor_account) == Decimal("580.00")
    assert LedgerTransaction.objects.filter(kind="vendor_topup").count() == 1


def test_our_misconfiguration_is_retried_without_blaming_the_customer(
    vendor_account: VendorAccount, fake: FakeGateway, contacts: list[str], django_capture_on_commit_callbacks: Any
) -> None:
    top_up = open_top_up(vendor_account)
    PaymentMethod.objects.update(gateway="stripe")  # not configured here
    now = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        top_up = top_up_charge(top_up_id=top_up.pk, now=now)
    assert (top_up.status, top_up.next_attempt_at) == ("pending", now + timedelta(hours=1))
    assert top_up.attempts.get().outcome == "error"
    assert TopUpRule.objects.get().consecutive_failures == 0
    assert mail.outbox == []


def test_disabling_a_rule_cancels_its_waiting_top_up_and_enabling_it_clears_the_failures(
    vendor_account: VendorAccount, fake: FakeGateway
) -> None:
    top_up = open_top_up(vendor_account)
    rule = TopUpRule.objects.get()
    services.top_up_rule_update(rule=rule, data={"enabled": False})
    top_up.refresh_from_db()
    assert (top_up.status, top_up.last_error) == ("canceled", "Automatic top-ups were turned off.")
    TopUpRule.objects.update(consecutive_failures=3, disabled_reason="Turned off after 3 failed top-ups in a row.")
    rule = services.top_up_rule_update(rule=rule, data={"enabled": True})
    assert (rule.consecutive_failures, rule.disabled_reason) == (0, "")


def test_a_new_rule_on_a_balance_already_low_tops_up_at_once(
    vendor_account: VendorAccount, fake: FakeGateway, django_capture_on_commit_callbacks: Any
) -> None:
    fund(vendor_account, "80.00")
    card = method(vendor_account.organization, "pm_ok")
    data: services.TopUpRuleData = {"target_kind": "vendor_account", "vendor_account": vendor_account,
                                    "trigger": "balance_below", "threshold_amount": Decimal("100.00"),
                                    "method": "fixed", "amount": Decimal("500.00"), "primary_method": card}  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        rule = services.top_up_rule_create(organization=vendor_account.organization, data=data)
    assert rule.currency == "USD"
    assert TopUp.objects.get().status == "succeeded"
    assert prepaid(vendor_account) == Decimal("580.00")


def test_a_wallet_rule_takes_the_wallet_currency(wallet_org: Organization, fake: FakeGateway) -> None:
    card = method(wallet_org, "pm_ok")
    data: services.TopUpRuleData = {"target_kind": "wallet", "trigger": "runway_below",
                                    "threshold_days": Decimal("7"), "method": "target_balance",
                                    "target_balance": Decimal("1000"), "primary_method": card}  # fmt: skip
    rule = services.top_up_rule_create(organization=wallet_org, data=data)
    assert (rule.currency, rule.vendor_account) == ("EUR", None)
    with pytest.raises(services.TopUpRuleInvalid, match="currency: the wallet is kept in EUR"):
        services.top_up_rule_update(rule=rule, data={"currency": "USD"})


def test_an_asynchronous_payment_that_bounces_continues_the_schedule(
    vendor_account: VendorAccount, fake: FakeGateway, contacts: list[str], django_capture_on_commit_callbacks: Any
) -> None:
    top_up = top_up_charge(top_up_id=open_top_up(vendor_account, "pm_processing").pk)
    with django_capture_on_commit_callbacks(execute=True):
        services.top_up_payment_fail(gateway="fake", gateway_reference=top_up.gateway_reference,
                                     decline_code="insufficient_funds")  # fmt: skip
        services.top_up_payment_fail(gateway="fake", gateway_reference=top_up.gateway_reference,
                                     decline_code="insufficient_funds")  # a duplicate event  # fmt: skip
    top_up.refresh_from_db()
    assert (top_up.status, top_up.last_decline_code) == ("pending", "insufficient_funds")
    assert TopUpRule.objects.get().consecutive_failures == 1
    assert len(mail.outbox) == 1
    assert prepaid(vendor_account) == Decimal("80.00")


def test_saving_a_payment_method_keeps_only_display_details(organization: Organization, fake: FakeGateway) -> None:
    saved = services.payment_method_save(organization=organization, gateway="fake", token="tok_google_pay",
                                         customer_reference="cus_1")  # fmt: skip
    assert (saved.gateway_reference, saved.label, saved.is_default) == ("pm_google_pay", "Visa •••• 4242 (Google Pay)",
                                                                        True)  # fmt: skip
    other = services.payment_method_save(organization=organization, gateway="fake", token="tok_ok",
                                         customer_reference="cus_1")  # fmt: skip
    assert other.is_default is False


# --- The fake gateway and the registry ----------------------------------------------------------


def test_the_fake_gateway_replays_an_idempotency_key_without_charging_again(fake: FakeGateway) -> None:
    request = ChargeRequest(amount=Decimal("10.00"), currency="USD", payment_method="pm_ok", customer_reference="c",
                            idempotency_key="topup:1:attempt:1")  # fmt: skip
    first, again = fake.charge(request), fake.charge(request)
    assert first == again and first.status == "succeeded"
    assert (len(fake.requests), len(fake.charges)) == (2, 1)
    with pytest.raises(PaymentConfigurationError, match="used with other parameters"):
        fake.charge(ChargeRequest(amount=Decimal("11.00"), currency="USD", payment_method="pm_ok",
                                  customer_reference="c", idempotency_key="topup:1:attempt:1"))  # fmt: skip
    decline = ChargeRequest(amount=Decimal("1"), currency="USD", payment_method="pm_decline_lost_card",
                            customer_reference="c", idempotency_key="k2")  # fmt: skip
    fake.script("succeeded")
    assert fake.charge(decline).status == "succeeded"  # the script goes first
    with pytest.raises(PaymentDeclined) as declined:
        fake.charge(ChargeRequest(amount=Decimal("1"), currency="USD", payment_method="pm_decline_lost_card",
                                  customer_reference="c", idempotency_key="k3"))  # fmt: skip
    assert (declined.value.decline_code, declined.value.is_hard) == ("lost_card", True)


def test_the_fake_gateway_verifies_webhook_signatures(fake: FakeGateway) -> None:
    body, headers = fake.webhook(event_id="evt_1", event_type="charge.succeeded", reference="pi_1",
                                 amount=Decimal("5.00"), currency="USD")  # fmt: skip
    event = fake.parse_webhook(body, headers)
    assert (event.id, event.type, event.gateway_reference, event.amount) == ("evt_1", "charge.succeeded", "pi_1",
                                                                             Decimal("5.00"))  # fmt: skip
    with pytest.raises(WebhookInvalid):
        fake.parse_webhook(body.replace(b"5.00", b"500.00"), headers)


def test_an_unknown_gateway_says_which_ones_exist(db: Any) -> None:
    with pytest.raises(
        PaymentConfigurationError, match=r"No payment gateway 'stripe' is configured \(configured: fake\)"
    ):
        gateway_for("stripe")
    with override_settings(PAYMENT_GATEWAYS=[]), pytest.raises(PaymentConfigurationError, match="configured: none"):
        gateway_for("fake")


# --- API --------------------------------------------------------------------------------------


def rule_body(account: VendorAccount, primary: PaymentMethod, **changes: Any) -> dict[str, Any]:
    body = {"target_kind": "vendor_account", "vendor_account": account.pk, "trigger": "balance_below",
            "threshold_amount": "100.00", "method": "fixed", "amount": "500.00", "minimum_amount": "0",
            "primary_method": primary.pk}  # fmt: skip
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


@with_routes
def test_a_billing_admin_creates_a_rule_and_reads_its_preview(
    owner_client: APIClient, vendor_account: VendorAccount, organization: Organization
) -> None:
    card = method(organization, "pm_ok")
    response = owner_client.post("/api/v1/top-up-rules/", rule_body(vendor_account, card), format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["currency"], body["amount"], body["enabled"], body["consecutive_failures"]) == (
        "USD", "500.0000000000", True, 0)  # fmt: skip
    assert body["preview"] == "Nothing is being spent at the moment, so this rule would not top up."
    assert owner_client.get(f"/api/v1/top-up-rules/{body['id']}/").json()["primary_method"] == card.pk
    patched = owner_client.patch(f"/api/v1/top-up-rules/{body['id']}/", {"amount": "250.00"}, format="json")
    assert patched.json()["amount"] == "250.0000000000"


@with_routes
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"threshold_amount": "-5"}, "threshold_amount: must be a positive amount for the balance_below trigger"),
        ({"trigger": "runway_below"}, "threshold_days: must be a positive number of days"),
        ({"amount": "0"}, "amount: must be a positive amount for a fixed top-up"),
        ({"minimum_amount": "200", "maximum_amount": "100"}, "minimum_amount: must not be above maximum_amount (100)"),
        ({"method": "target_balance", "target_balance": "50"}, "target_balance: must be above threshold_amount (100)"),
        ({"monthly_cap": "10", "minimum_amount": "20"}, "monthly_cap: is below minimum_amount (20)"),
        ({"amount": "500.001"}, "amount: has more decimals than USD allows"),
        ({"method": None}, "method: This field is required."),
        ({"primary_method": None}, "primary_method: This field is required."),
        ({"fallback_method": "same"}, "fallback_method: must be a different payment method from primary_method"),
        ({"primary_method": "foreign"}, "primary_method: No payment method with id"),
        ({"vendor_account": "foreign"}, "vendor_account: No vendor account with id"),
        ({"target_kind": "wallet", "vendor_account": None}, "target_kind: this organization is invoiced monthly"),
        ({"primary_method": "expired"}, "primary_method: Visa •••• 4242 expired in 01/2020: add a new one."),
    ],
)
def test_rule_validation_says_what_to_fix(
    owner_client: APIClient, vendor_account: VendorAccount, organization: Organization,
    other_organization: Organization, changes: dict[str, Any], message: str,
) -> None:  # fmt: skip
    card = method(organization, "pm_ok")
    replacements = {
        "same": card.pk,
        "foreign": None,
        "expired": method(organization, "pm_old", exp_month=1, exp_year=2020).pk,
    }
    for name, value in list(changes.items()):
        if value == "foreign":
            replacements["foreign"] = (
                method(other_organization, "pm_theirs").pk if name.endswith("method")
                else VendorAccountFactory(organization=other_organization).pk
            )  # fmt: skip
        if value in replacements:
            changes[name] = replacements[value]
    body = rule_body(vendor_account, card, **changes)
    response = owner_client.post("/api/v1/top-up-rules/", body, format="json")
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]
    assert TopUpRule.objects.count() == 0


@with_routes
def test_a_second_enabled_rule_for_the_same_account_is_refused(
    owner_client: APIClient, vendor_account: VendorAccount, organization: Organization
) -> None:
    card = method(organization, "pm_ok")
    assert owner_client.post("/api/v1/top-up-rules/", rule_body(vendor_account, card), format="json").status_code == 201
    response = owner_client.post("/api/v1/top-up-rules/", rule_body(vendor_account, card), format="json")
    assert response.status_code == 400
    assert "enabled: OpenAI already has an enabled top-up rule" in response.json()["error"]["message"]


@with_routes
def test_a_viewer_cannot_create_rules(viewer: User, vendor_account: VendorAccount, organization: Organization) -> None:
    client = APIClient()
    client.force_login(viewer)
    card = method(organization, "pm_ok")
    response = client.post("/api/v1/top-up-rules/", rule_body(vendor_account, card), format="json")
    assert response.status_code == 403
    assert "needs Billing admin or higher" in response.json()["error"]["message"]
    assert client.get("/api/v1/top-up-rules/").status_code == 200
    assert TopUpRule.objects.count() == 0


@with_routes
def test_top_ups_list_their_attempts_and_decline_reasons(
    owner_client: APIClient, vendor_account: VendorAccount, fake: FakeGateway
) -> None:
    top_up = top_up_charge(top_up_id=open_top_up(vendor_account, "pm_decline_insufficient_funds").pk)
    body = owner_client.get("/api/v1/top-ups/").json()
    assert body["count"] == 1
    (item,) = body["results"]
    assert (item["status"], item["last_decline_code"], item["last_error"]) == (
        "pending", "insufficient_funds",
        "The card has insufficient funds. Add funds, raise the card's limit, or use another card.")  # fmt: skip
    (attempt,) = item["attempts"]
    assert (attempt["number"], attempt["outcome"], attempt["idempotency_key"], attempt["payment_method_label"]) == (
        1, "declined", f"topup:{top_up.pk}:attempt:1", "Visa •••• 4242")  # fmt: skip
    assert owner_client.get("/api/v1/top-ups/?status=succeeded").json()["count"] == 0
    assert owner_client.post("/api/v1/top-ups/", {}, format="json").status_code == 405


@with_routes
def test_payment_methods_set_the_default_and_refuse_to_delete_a_rules_primary(
    owner_client: APIClient, organization: Organization, vendor_account: VendorAccount
) -> None:
    first = method(organization, "pm_ok", is_default=True)
    second = method(organization, "pm_ok_2", wallet="google_pay")
    response = owner_client.patch(f"/api/v1/payment-methods/{second.pk}/", {"is_default": True}, format="json")
    assert response.status_code == 200
    assert (response.json()["is_default"], response.json()["label"]) == (True, "Visa •••• 4242 (Google Pay)")
    first.refresh_from_db()
    assert first.is_default is False
    rule_for(vendor_account, primary_method=first, fallback_method=second)
    refused = owner_client.delete(f"/api/v1/payment-methods/{first.pk}/")
    assert refused.status_code == 409
    assert refused.json()["error"]["message"].startswith("Visa •••• 4242 pays top-up rule")
    assert owner_client.delete(f"/api/v1/payment-methods/{second.pk}/").status_code == 204
    assert TopUpRule.objects.get().fallback_method is None


@with_routes
@pytest.mark.parametrize("route", ["top-up-rules", "top-ups", "payment-methods"])
def test_another_organizations_objects_are_not_found(
    owner_client: APIClient, other_organization: Organization, route: str
) -> None:
    theirs = {"top-up-rules": TopUpRuleFactory, "top-ups": TopUpFactory,
              "payment-methods": PaymentMethodFactory}[route](organization=other_organization)  # fmt: skip
    for verb in ("get", "patch", "delete"):
        response = getattr(owner_client, verb)(f"/api/v1/{route}/{theirs.pk}/", {}, format="json")
        assert response.status_code in (404, 405), (verb, response.status_code)
        assert not (verb == "get" and response.status_code != 404)
    assert owner_client.get(f"/api/v1/{route}/").json()["count"] == 0
    assert type(theirs).objects.filter(pk=theirs.pk).exists()


def test_the_new_models_are_tenant_models() -> None:
    from aggregator.tenancy.scoping import TenantModel

    assert all(issubclass(m, TenantModel) for m in (PaymentMethod, TopUpRule, TopUp, TopUpAttempt))


def test_a_card_the_bank_wants_to_confirm_is_not_saved(organization: Organization, fake: FakeGateway) -> None:
    """Saving from a token cannot ask the customer: nothing is stored, and the error sends them to
    the payment methods page (its SetupIntent flow lets the bank ask)."""
    with pytest.raises(PaymentNeedsAction) as needs:
        services.payment_method_save(organization=organization, gateway="fake", token="tok_needs_action",
                                     customer_reference="cus_FAKE_needs")  # fmt: skip
    assert "add it on the Payment methods page" in needs.value.message
    assert needs.value.gateway_reference == "pm_needs_action"
    assert not PaymentMethod.objects.filter(organization=organization).exists()

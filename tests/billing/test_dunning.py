"""Dunning: automatic retries of the saved default payment method on the policy's days, reminders
for customers who pay by hand, hard declines, the write-off at the end, and safety when a step runs
twice. Charges go through the deterministic test gateway here; the end-to-end flow over real HTTP
against localstripe is at the bottom of this file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import stripe
from django.core import mail
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import include, path
from rest_framework.routers import SimpleRouter
from rest_framework.test import APIClient

from aggregator import urls as project_urls
from aggregator.system.schedule import DEFAULT_SCHEDULE
from aggregator.tenancy.models import AuditEvent, Organization, Role, User
from billing.invoicing.models import Invoice
from billing.invoicing.services import invoice_payment_record
from billing.payments.api import InvoicePaymentViewSet
from billing.payments.dunning import services as dunning
from billing.payments.dunning.models import DunningCase, DunningPolicy, DunningStep, parse_retry_days
from billing.payments.dunning.selectors import dunning_queue
from billing.payments.gateways import FAKE_GATEWAY, gateway_for
from billing.payments.gateways.base import PaymentDeclined
from billing.payments.gateways.fake import FakeGateway
from billing.payments.models import PaymentMethod
from billing.payments.records import Payment, WebhookEvent
from billing.payments.webhooks import stripe_webhook
from billing.topups.services import payment_method_save
from tests.billing import localstripe as localstripe_fixtures
from tests.billing.localstripe import SECRET_KEY, LocalStripe
from tests.factories import InvoiceFactory, IssuerFactory, MembershipFactory, PaymentMethodFactory

_router = SimpleRouter()
_router.register("invoices", InvoicePaymentViewSet, basename="invoice-payment")
urlpatterns = [
    path("webhooks/stripe/", stripe_webhook, name="stripe-webhook"),
    path("api/v1/", include(_router.urls)),
    *project_urls.urlpatterns,
]
pytestmark = pytest.mark.urls(__name__)

localstripe_server = localstripe_fixtures.localstripe_server
localstripe = localstripe_fixtures.localstripe

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)  # when the first charge failed
DAY = timedelta(days=1)


# --- Fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture(autouse=True)
def payment_gateways(settings: Any) -> None:
    settings.PAYMENT_GATEWAYS = [FAKE_GATEWAY]
    settings.OPERATOR_EMAIL = "collections@operator.test"


@pytest.fixture
def fake() -> Iterator[FakeGateway]:
    gateway = gateway_for("fake")
    assert isinstance(gateway, FakeGateway)
    gateway.reset()
    yield gateway
    gateway.reset()


@pytest.fixture
def invoice(organization: Organization, owner: User) -> Invoice:
    return InvoiceFactory(
        organization=organization, currency="USD", total=Decimal("120.50"), amount_due=Decimal("120.50"),
        due_date=date(2026, 11, 19), customer={"name": "Acme Corp"},
    )  # fmt: skip


Run = Callable[[datetime], list[DunningCase]]


@pytest.fixture
def run(django_capture_on_commit_callbacks: Any) -> Run:
    """The hourly sweep at ``now``, with the emails it queues after commit sent."""

    def sweep(now: datetime) -> list[DunningCase]:
        with django_capture_on_commit_callbacks(execute=True):
            return dunning.dunning_run_due(now=now)

    return sweep


def card(organization: Organization, reference: str, **extra: Any) -> PaymentMethod:
    """A saved default card of the test gateway; its reference decides how charges end."""
    fields: dict[str, Any] = {"is_default": True, **extra}
    method: PaymentMethod = PaymentMethodFactory(
        organization=organization, gateway="fake", gateway_reference=reference, **fields
    )
    return method


def open_after_failure(invoice: Invoice, now: datetime = T0) -> DunningCase:
    case = dunning.dunning_case_open(invoice_id=invoice.pk, trigger=DunningCase.Trigger.PAYMENT_FAILED, anchor_at=now)
    assert case is not None
    return case


def subjects() -> list[str]:
    return [message.subject for message in mail.outbox]


# --- The schedule -------------------------------------------------------------------------------


def test_the_default_policy_retries_on_days_1_3_5_7_and_writes_off_on_day_14(invoice: Invoice) -> None:
    case = open_after_failure(invoice)
    assert (case.state, case.retry_days, case.grace_days, case.steps_done) == ("active", "1, 3, 5, 7", 7, 0)
    assert [case.step_due(n) for n in range(1, 6)] == [T0 + DAY, T0 + 3 * DAY, T0 + 5 * DAY, T0 + 7 * DAY,
                                                      T0 + 14 * DAY]  # fmt: skip
    assert case.next_step_at == T0 + DAY
    assert AuditEvent.objects.filter(action="dunning.open", object_id=str(case.pk)).exists()
    # A second failure does not open a second case or move the schedule.
    assert open_after_failure(invoice, T0 + 2 * DAY) == case
    assert DunningCase.objects.get().next_step_at == T0 + DAY


def test_an_issuers_policy_sets_its_own_days(organization: Organization) -> None:
    issuer = IssuerFactory()
    DunningPolicy.objects.create(issuer=issuer, retry_days="2, 4", grace_days=3)
    invoice = InvoiceFactory(
        organization=organization, issuer=issuer, total=Decimal("5.00"), amount_due=Decimal("5.00")
    )
    case = open_after_failure(invoice)
    assert [case.step_due(n) for n in (1, 2, 3)] == [T0 + 2 * DAY, T0 + 4 * DAY, T0 + 7 * DAY]


def test_a_policy_that_is_off_opens_no_case(organization: Organization) -> None:
    issuer = IssuerFactory()
    DunningPolicy.objects.create(issuer=issuer, enabled=False)
    invoice = InvoiceFactory(
        organization=organization, issuer=issuer, total=Decimal("5.00"), amount_due=Decimal("5.00")
    )
    assert dunning.dunning_case_open(invoice_id=invoice.pk, trigger="payment_failed", anchor_at=T0) is None
    assert not DunningCase.objects.exists()


@pytest.mark.parametrize(
    ("text", "error"),
    [("", "at least one"), ("1, x", "whole numbers"), ("3, 1", "increasing"), ("0, 2", "at least 1")],
)
def test_retry_days_must_be_increasing_whole_days(text: str, error: str) -> None:
    assert parse_retry_days(" 1,3, 5 ,7 ") == [1, 3, 5, 7]
    with pytest.raises(ValidationError) as invalid:
        parse_retry_days(text)
    assert error in str(invalid.value)


# --- Automatic retries --------------------------------------------------------------------------


def test_soft_declines_are_retried_on_each_day_with_a_new_attempt_key_then_written_off(
    invoice: Invoice, fake: FakeGateway, run: Run, settings: Any
) -> None:
    card(invoice.organization, "pm_decline_insufficient_funds")
    case = open_after_failure(invoice)
    assert run(T0 + DAY - timedelta(minutes=1)) == []  # not due yet
    for day, attempt in ((1, 1), (3, 2), (5, 3), (7, 4)):
        run(T0 + day * DAY)
        assert len(fake.requests) == attempt
        request = fake.requests[-1]
        assert (request.amount, request.currency, request.off_session) == (Decimal("120.50"), "USD", True)
        assert request.idempotency_key == f"invoice:{invoice.pk}:attempt:{attempt}"
        assert request.metadata["invoice_id"] == str(invoice.pk)
    payments = list(Payment.objects.filter(invoice=invoice).order_by("attempt"))
    assert [(p.attempt, p.status, p.failure_code, p.amount) for p in payments] == [
        (n, "failed", "insufficient_funds", Decimal("120.50")) for n in (1, 2, 3, 4)]  # fmt: skip
    steps = list(DunningStep.objects.filter(case=case))
    assert [(s.number, s.kind, s.outcome, s.payment_id) for s in steps] == [
        (n, "charge", "declined", payments[n - 1].pk) for n in (1, 2, 3, 4)]  # fmt: skip
    assert subjects() == [f"The payment of invoice {invoice.number} was declined"] * 4
    first, last = mail.outbox[0].body, mail.outbox[-1].body
    assert "We tried to charge 120.50 USD for invoice" in first and "to Visa •••• 4242" in first
    assert "the card has insufficient funds." in first
    assert "We will try again on Nov. 23, 2026." in first
    assert f"Pay online: {settings.SITE_URL}/invoices/{invoice.pk}/pay/" in first
    assert "That was our last automatic attempt." in last
    assert "If the invoice is still unpaid on Dec. 4, 2026" in last
    assert mail.outbox[0].to == ["owner@acme.test"]

    case.refresh_from_db()
    assert (case.state, case.next_step_at) == ("active", T0 + 14 * DAY)
    mail.outbox.clear()
    run(T0 + 14 * DAY)
    case.refresh_from_db()
    invoice.refresh_from_db()
    assert (case.state, case.next_step_at, invoice.status) == ("exhausted", None, Invoice.Status.UNCOLLECTIBLE)
    assert len(fake.requests) == 4  # the write-off charges nothing
    (notice,) = mail.outbox
    assert notice.to == ["collections@operator.test"]
    assert notice.subject == f"Invoice {invoice.number} of Acme Corp is uncollectible after dunning"
    assert "Amount left: 120.50 USD" in notice.body and "Steps taken: 4" in notice.body
    assert "insufficient_funds" in notice.body
    audit = AuditEvent.objects.get(action="dunning.exhausted")
    last_failure = "insufficient_funds: " + PaymentDeclined("insufficient_funds").message
    assert audit.after == {"invoice": invoice.number, "amount_left": "120.50", "steps": 4, "uncollectible": True,
                           "last_failure": last_failure}  # fmt: skip
    assert AuditEvent.objects.filter(action="invoice.uncollectible", object_id=str(invoice.pk)).exists()
    run(T0 + 30 * DAY)  # nothing more
    assert len(mail.outbox) == 1


def test_a_retry_that_succeeds_pays_the_invoice_and_closes_the_case(
    invoice: Invoice, fake: FakeGateway, run: Run
) -> None:
    card(invoice.organization, "pm_ok_visa")
    fake.script(PaymentDeclined("insufficient_funds"), "succeeded")
    invoice_payment_record(invoice_id=invoice.pk, amount=Decimal("20.50"))  # part came by transfer
    case = open_after_failure(invoice)
    run(T0 + DAY)
    run(T0 + 3 * DAY)
    invoice.refresh_from_db()
    case.refresh_from_db()
    assert (invoice.status, invoice.amount_paid) == (Invoice.Status.PAID, Decimal("120.50"))
    assert (case.state, case.next_step_at, case.steps_done) == ("recovered", None, 2)
    assert [r.amount for r in fake.requests] == [Decimal("100.00"), Decimal("100.00")]
    paid = Payment.objects.get(attempt=2)
    assert (paid.status, paid.amount, paid.succeeded_at is not None) == ("succeeded", Decimal("100.00"), True)
    assert paid.gateway_reference.startswith("pi_fake_")
    assert DunningStep.objects.get(number=2).outcome == "succeeded"
    run(T0 + 5 * DAY)
    assert len(fake.requests) == 2


def test_a_hard_decline_stops_automatic_retries_and_reminders_ask_for_another_method(
    invoice: Invoice, fake: FakeGateway, run: Run
) -> None:
    stolen = card(invoice.organization, "pm_decline_stolen_card")
    case = open_after_failure(invoice)
    run(T0 + DAY)
    case.refresh_from_db()
    assert (case.blocked_method, case.last_failure_code) == (stolen, "stolen_card")
    assert "Hard decline (stolen_card)" in case.stop_reason
    assert "We will not charge this payment method again." in mail.outbox[-1].body
    assert "the bank refused the card, so it cannot be charged again." in mail.outbox[-1].body
    run(T0 + 3 * DAY)
    run(T0 + 5 * DAY)
    assert len(fake.requests) == 1
    assert [s.kind for s in DunningStep.objects.filter(case=case)] == ["charge", "reminder", "reminder"]
    assert subjects()[1:] == [f"Reminder: invoice {invoice.number} is unpaid"] * 2
    assert "was due on Nov. 19, 2026 and is not paid yet." in mail.outbox[1].body

    # The customer makes a new card the default: automatic retries resume with it.
    stolen.is_default = False
    stolen.save()
    card(invoice.organization, "pm_ok_new")
    run(T0 + 7 * DAY)
    invoice.refresh_from_db()
    assert (invoice.status, DunningCase.objects.get().state) == (Invoice.Status.PAID, "recovered")
    assert [r.payment_method for r in fake.requests] == ["pm_decline_stolen_card", "pm_ok_new"]


def test_after_a_hard_decline_the_fallback_method_is_charged(invoice: Invoice, fake: FakeGateway, run: Run) -> None:
    card(invoice.organization, "pm_decline_expired_card")
    card(invoice.organization, "pm_decline_insufficient_funds", is_default=False, is_fallback=True)
    open_after_failure(invoice)
    run(T0 + DAY)
    run(T0 + 3 * DAY)
    run(T0 + 5 * DAY)
    assert [r.payment_method for r in fake.requests] == [
        "pm_decline_expired_card", "pm_decline_insufficient_funds", "pm_decline_insufficient_funds"]  # fmt: skip
    assert "We will try again on" in mail.outbox[-1].body


@pytest.mark.parametrize(
    ("code", "charged"), [("stolen_card", "pm_ok_fallback"), ("insufficient_funds", "pm_ok_default")]
)
def test_a_hard_decline_on_the_pay_page_blocks_the_same_saved_card(
    invoice: Invoice, fake: FakeGateway, run: Run, code: str, charged: str
) -> None:
    """The customer paid on the pay page with the card that is also their saved default, and the
    bank refused it for good: dunning charges the fallback instead. A soft decline does not."""
    card(invoice.organization, "pm_ok_default", fingerprint="fp_FAKE_card_a")
    card(invoice.organization, "pm_ok_fallback", is_default=False, is_fallback=True, fingerprint="fp_FAKE_card_b")
    Payment.objects.create(
        organization=invoice.organization, invoice=invoice, gateway="fake", gateway_reference="pi_fake_pay_page",
        amount=invoice.amount_due,
        currency="USD", idempotency_key=f"invoice:{invoice.pk}:attempt:1", status=Payment.Status.FAILED,
        failure_code=code, card_fingerprint="fp_FAKE_card_a",
    )  # fmt: skip
    open_after_failure(invoice)
    run(T0 + DAY)
    assert [r.payment_method for r in fake.requests] == [charged]
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_paid) == (Invoice.Status.PAID, Decimal("120.50"))


def test_a_bank_asking_for_3d_secure_gets_the_customer_a_link_and_no_more_automatic_charges(
    invoice: Invoice, fake: FakeGateway, run: Run
) -> None:
    card(invoice.organization, "pm_needs_action")
    case = open_after_failure(invoice)
    run(T0 + DAY)
    payment = Payment.objects.get()
    assert (payment.status, payment.failure_code) == ("requires_payment", "authentication_required")
    assert payment.gateway_reference.startswith("pi_fake_")  # still payable on the pay page
    (email,) = mail.outbox
    assert email.subject == f"Confirm the payment of invoice {invoice.number}"
    assert f"https://fake-gateway.invalid/authenticate/{payment.gateway_reference}" in email.body
    run(T0 + 3 * DAY)
    assert len(fake.requests) == 1
    case.refresh_from_db()
    assert [s.outcome for s in case.steps.all()] == ["action_required", "reminded"]


def test_a_processing_charge_waits_for_its_event(invoice: Invoice, fake: FakeGateway, run: Run) -> None:
    card(invoice.organization, "pm_processing")
    case = open_after_failure(invoice)
    run(T0 + DAY)
    step = DunningStep.objects.get()
    assert (step.outcome, Payment.objects.get().status) == ("processing", "processing")
    run(T0 + 3 * DAY)  # the next step waits while the payment is processing
    assert len(fake.requests) == 1
    case.refresh_from_db()
    assert case.next_step_at == T0 + 4 * DAY
    # The bank's answer arrives (as the webhook handler reports it): declined.
    payment = Payment.objects.get()
    payment.status, payment.failure_code = Payment.Status.FAILED, "insufficient_funds"
    payment.save()
    dunning.dunning_payment_failed(payment=payment, now=T0 + 3 * DAY + timedelta(hours=2))
    step.refresh_from_db()
    assert (step.outcome, step.decline_code) == ("declined", "insufficient_funds")


# --- Customers who pay by hand ------------------------------------------------------------------


def test_customers_without_a_saved_card_get_reminders_from_the_due_date(
    invoice: Invoice, fake: FakeGateway, run: Run
) -> None:
    run(datetime(2026, 11, 19, 23, 0, tzinfo=UTC))  # due today: not overdue yet
    assert not DunningCase.objects.exists()
    due_end = datetime(2026, 11, 20, tzinfo=UTC)
    run(due_end + DAY)
    case = DunningCase.objects.get()
    assert (case.opened_by, case.anchor_at, case.steps_done) == ("overdue", due_end, 1)
    for day in (3, 5, 7):
        run(due_end + day * DAY)
    assert fake.requests == []
    assert subjects() == [f"Reminder: invoice {invoice.number} is unpaid"] * 3 + [
        f"Final reminder: invoice {invoice.number} is unpaid"]  # fmt: skip
    assert f"/invoices/{invoice.pk}/pay/" in mail.outbox[0].body
    run(due_end + 14 * DAY)
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.UNCOLLECTIBLE


def test_an_invoice_found_long_overdue_gets_its_steps_a_day_apart(invoice: Invoice, run: Run) -> None:
    late = datetime(2027, 1, 15, 10, 0, tzinfo=UTC)  # weeks after the due date
    run(late)
    case = DunningCase.objects.get()
    assert (case.steps_done, case.next_step_at) == (1, late + DAY)
    run(late + DAY)
    assert DunningCase.objects.get().next_step_at == late + 2 * DAY
    assert len(mail.outbox) == 2


def test_reminders_are_written_in_the_invoices_language(organization: Organization, owner: User, run: Run) -> None:
    InvoiceFactory(organization=organization, locale="ja", total=Decimal("12345"),
                   amount_due=Decimal("12345"), currency="JPY", due_date=date(2026, 11, 19))  # fmt: skip
    run(datetime(2026, 11, 21, 9, 0, tzinfo=UTC))
    (email,) = mail.outbox
    assert "請求書" in email.subject  # "invoice", from the Japanese catalog
    assert "2026年11月19日" in email.body  # Japanese date format
    assert "12,345 JPY" in email.body


def test_a_payment_by_transfer_closes_the_case_before_the_next_step(
    invoice: Invoice, fake: FakeGateway, run: Run
) -> None:
    card(invoice.organization, "pm_ok_visa")
    case = open_after_failure(invoice)
    invoice_payment_record(invoice_id=invoice.pk, amount=Decimal("120.50"))
    run(T0 + DAY)
    case.refresh_from_db()
    assert (case.state, case.close_note, fake.requests, mail.outbox) == (
        "recovered", "The invoice is paid.", [], [])  # fmt: skip


def test_an_operator_can_stop_a_case(invoice: Invoice, run: Run, fake: FakeGateway) -> None:
    case = dunning.dunning_case_stop(case_id=open_after_failure(invoice).pk, reason="Agreed a payment plan")
    assert (case.state, case.close_note) == ("canceled", "Agreed a payment plan")
    run(T0 + 30 * DAY)
    assert (mail.outbox, Invoice.objects.get().status) == ([], Invoice.Status.OPEN)


# --- Running twice ------------------------------------------------------------------------------


def test_a_sweep_run_twice_charges_and_emails_once(invoice: Invoice, fake: FakeGateway, run: Run) -> None:
    card(invoice.organization, "pm_decline_card_declined")
    open_after_failure(invoice)
    run(T0 + DAY)
    run(T0 + DAY)
    dunning.dunning_case_step(case_id=DunningCase.objects.get().pk, now=T0 + DAY + timedelta(hours=1))
    assert (len(fake.requests), len(mail.outbox), DunningStep.objects.count()) == (1, 1, 1)


def test_a_charge_interrupted_mid_call_is_repeated_with_the_same_key(
    invoice: Invoice, fake: FakeGateway, run: Run
) -> None:
    card(invoice.organization, "pm_ok_visa")
    case = open_after_failure(invoice)
    plan = dunning._step_begin(case_id=case.pk, now=T0 + DAY)  # committed, then the worker died
    assert plan is not None
    fake.charge(plan.request)  # the gateway charged before the crash
    assert Payment.objects.get().status == "processing"  # the pay page waits meanwhile
    run(T0 + DAY + timedelta(minutes=5))  # inside the lease: left alone
    assert len(fake.requests) == 1
    run(T0 + DAY + timedelta(minutes=20))  # the lease passed: repeated with the same key
    assert [r.idempotency_key for r in fake.requests] == [f"invoice:{invoice.pk}:attempt:1"] * 2
    assert len(fake.charges) == 1  # charged once
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_paid) == (Invoice.Status.PAID, Decimal("120.50"))


def test_the_dunning_queue_lists_active_cases_next_due_first(organization: Organization) -> None:
    later = open_after_failure(InvoiceFactory(organization=organization), T0 + 2 * DAY)
    sooner = open_after_failure(
        InvoiceFactory(organization=organization, period_start=date(2026, 9, 1), period_end=date(2026, 9, 30)), T0
    )
    assert list(dunning_queue()) == [sooner, later]


def test_the_sweep_is_in_the_beat_schedule() -> None:
    assert DEFAULT_SCHEDULE["Run due dunning steps"] == ("billing.payments.dunning.tasks.run_due", 3600)


# --- End to end over real HTTP: localstripe -----------------------------------------------------

STRIPE_GATEWAY = "billing.payments.gateways.stripe.StripeGateway"
WEBHOOK_SECRET = "whsec_FAKE_dunning_test_0000"
DECLINED_ON_CHARGE = "4000000000000341"  # attaching succeeds, every charge is declined


@pytest.fixture
def stripe_settings(settings: Any, localstripe: LocalStripe) -> stripe.StripeClient:
    settings.PAYMENT_GATEWAYS = [FAKE_GATEWAY, STRIPE_GATEWAY]
    settings.STRIPE_SECRET_KEY = SECRET_KEY
    settings.STRIPE_PUBLISHABLE_KEY = "pk_test_FAKE_localstripe_0000"
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_API_BASE = localstripe.url
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    return stripe.StripeClient(SECRET_KEY, base_addresses={"api": localstripe.url}, max_network_retries=0)


def test_a_card_declined_on_charge_is_dunned_through_stripe_until_written_off(
    stripe_settings: stripe.StripeClient, localstripe: LocalStripe, organization: Organization, owner: User,
    django_capture_on_commit_callbacks: Any, run: Run,
) -> None:  # fmt: skip
    api = stripe_settings
    billing_admin = MembershipFactory(organization=organization, role=Role.BILLING_ADMIN,
                                      user__email="ap@acme.test").user  # fmt: skip
    invoice = InvoiceFactory(organization=organization, total=Decimal("120.50"), amount_due=Decimal("120.50"),
                             due_date=date(2026, 12, 4))  # fmt: skip
    # The customer saves the card (Stripe checks it on attach: accepted) as the default.
    customer = dunning_customer(organization)
    token = api.v1.payment_methods.create(
        params={"type": "card", "card": {"number": DECLINED_ON_CHARGE, "exp_month": 12, "exp_year": 2030, "cvc": "123"}}
    ).id
    saved = payment_method_save(organization=organization, gateway="stripe", token=token, customer_reference=customer)
    assert saved.is_default

    # Paying on the pay page: the browser confirms with Stripe.js and the bank declines at once.
    portal = APIClient()
    portal.force_login(billing_admin)
    intent = portal.post(f"/api/v1/invoices/{invoice.pk}/pay/", {}, format="json").json()["payment_intent"]
    api.v1.payment_intents.update(intent, params={"payment_method": token})
    with pytest.raises(stripe.CardError) as declined:
        api.v1.payment_intents.confirm(intent)
    assert declined.value.user_message == "Your card was declined."  # what Stripe.js shows
    failed_at = datetime.now(UTC)
    assert (
        deliver(event_of(localstripe, "payment_failed", intent), django_capture_on_commit_callbacks).status_code == 200
    )
    payment = Payment.objects.get(gateway_reference=intent)
    assert (payment.status, payment.failure_code) == ("failed", "card_declined")
    assert payment.failure_message == "Your bank declined the payment. Contact your bank or use another payment method."
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.OPEN
    case = DunningCase.objects.get(invoice=invoice)
    assert (case.state, case.opened_by) == ("active", "payment_failed")
    assert abs(case.next_step_at - (failed_at + DAY)) < timedelta(seconds=30)  # type: ignore[operator]

    # Day 1: an automatic off-session charge of the saved card through Stripe, declined again.
    anchor = case.anchor_at
    run(anchor + DAY)
    retry = Payment.objects.get(attempt=2)
    assert (retry.idempotency_key, retry.status, retry.failure_code) == (
        f"invoice:{invoice.pk}:attempt:2", "failed", "card_declined")  # fmt: skip
    (pi,) = [p for p in api.v1.payment_intents.list(params={"limit": 100}).data if p.id not in (intent,)]
    assert (pi.amount, pi.currency, pi.customer, pi.payment_method) == (12050, "usd", customer, token)
    assert pi.metadata["idempotency_key"] == f"invoice:{invoice.pk}:attempt:2"
    # Stripe's event about that charge arrives too: matched by its key, recorded once, no second email.
    event = event_of(localstripe, "payment_failed", pi.id)
    assert deliver(event, django_capture_on_commit_callbacks).status_code == 200
    assert WebhookEvent.objects.get(event_id=event["id"]).status == "processed"
    assert Payment.objects.get(attempt=2).gateway_reference == pi.id
    assert subjects() == [f"The payment of invoice {invoice.number} was declined"]
    assert sorted(mail.outbox[0].to) == ["ap@acme.test", "owner@acme.test"]

    # Days 3, 5, 7: the retries advance, one new PaymentIntent each; then the write-off on day 14.
    for day in (3, 5, 7):
        run(anchor + day * DAY)
    assert Payment.objects.filter(invoice=invoice).count() == 5
    assert len(api.v1.payment_intents.list(params={"limit": 100}).data) == 5
    run(anchor + 14 * DAY)
    invoice.refresh_from_db()
    case.refresh_from_db()
    assert (invoice.status, case.state, case.steps_done) == (Invoice.Status.UNCOLLECTIBLE, "exhausted", 4)
    assert mail.outbox[-1].to == ["collections@operator.test"]
    assert AuditEvent.objects.filter(action="dunning.exhausted", object_id=str(case.pk)).exists()


def dunning_customer(organization: Organization) -> str:
    from billing.payments.services import stripe_customer_reference

    return stripe_customer_reference(organization=organization)


def event_of(localstripe: LocalStripe, kind: str, intent: str) -> dict[str, Any]:
    for _ in range(20):
        found = [e for e in localstripe.events(f"payment_intent.{kind}") if e["data"]["object"]["id"] == intent]
        if found:
            return found[-1]
        time.sleep(0.1)
    raise AssertionError(f"localstripe made no payment_intent.{kind} event for {intent}")


def deliver(event: dict[str, Any], capture: Any) -> Any:
    """POST the event to the webhook, signed as Stripe signs it."""
    raw = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(raw, WEBHOOK_SECRET)
    with capture(execute=True):
        return Client().post("/webhooks/stripe/", data=raw, content_type="application/json",
                             HTTP_STRIPE_SIGNATURE=header)  # fmt: skip

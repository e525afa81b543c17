"""Stripe payments over real HTTP against localstripe (no mocking of the stripe library): invoice
PaymentIntents and the double-charge guard, signed webhooks (verification, storage once, order),
declines, wallets, refunds and disputes, and off-session top-ups through the Stripe gateway.

localstripe does not emit refund or dispute events and leaves out ``payment_method_details``
(payments.md §2.1): those events are built in Stripe's shape and signed here with the same secret.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import stripe
from django.db import connection
from django.test import Client
from django.urls import include, path
from django.utils import timezone
from rest_framework.routers import SimpleRouter
from rest_framework.test import APIClient

from aggregator import urls as project_urls
from aggregator.tenancy.models import AuditEvent, Organization, Role, User
from billing.invoicing.models import Invoice
from billing.invoicing.services import invoice_payment_record
from billing.ledger.models import LedgerTransaction
from billing.ledger.services import credit_purchase_record
from billing.payments import services
from billing.payments.api import InvoicePaymentViewSet
from billing.payments.dunning.models import DunningCase
from billing.payments.gateways import FAKE_GATEWAY, gateway_for
from billing.payments.gateways.base import (
    ChargeRequest,
    PaymentConfigurationError,
    PaymentDeclined,
    PaymentNeedsAction,
    PaymentTemporaryFailure,
    decline_message,
)
from billing.payments.gateways.stripe import StripeGateway
from billing.payments.records import Payment, WebhookEvent
from billing.payments.webhooks import stripe_webhook
from billing.topups.models import TopUp, TopUpAttempt
from billing.topups.services import payment_method_save, top_up_charge, top_up_rules_evaluate
from providers.models import VendorAccount
from tests.billing import localstripe as localstripe_fixtures
from tests.billing.localstripe import SECRET_KEY, LocalStripe
from tests.factories import InvoiceFactory, MembershipFactory, OrganizationFactory, TopUpRuleFactory

# The routes this work adds (the project's URLconf gets them from the lead), then the project's.
_router = SimpleRouter()
_router.register("invoices", InvoicePaymentViewSet, basename="invoice-payment")
urlpatterns = [
    path("webhooks/stripe/", stripe_webhook, name="stripe-webhook"),
    path("api/v1/", include(_router.urls)),
    *project_urls.urlpatterns,
]
pytestmark = pytest.mark.urls(__name__)

# The localstripe fixtures (a session-wide server, emptied for each test).
localstripe_server = localstripe_fixtures.localstripe_server
localstripe = localstripe_fixtures.localstripe

STRIPE_GATEWAY = "billing.payments.gateways.stripe.StripeGateway"
WEBHOOK_SECRET = "whsec_FAKE_test_secret_0000"
PUBLISHABLE_KEY = "pk_test_FAKE_localstripe_0000"
VISA = "4242424242424242"
DECLINED_ON_ATTACH = "4000000000000002"
DECLINED_ON_CHARGE = "4000000000000341"
NEEDS_AUTHENTICATION = "4000002760003184"
TODAY = date(2026, 11, 20)

Deliver = Callable[..., Any]


# --- Fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture(autouse=True)
def stripe_settings(settings: Any, localstripe: LocalStripe) -> None:
    settings.PAYMENT_GATEWAYS = [FAKE_GATEWAY, STRIPE_GATEWAY]
    settings.STRIPE_SECRET_KEY = SECRET_KEY
    settings.STRIPE_PUBLISHABLE_KEY = PUBLISHABLE_KEY
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_API_BASE = localstripe.url
    settings.STRIPE_MAX_NETWORK_RETRIES = 0


@pytest.fixture
def api(localstripe: LocalStripe) -> stripe.StripeClient:
    """The stripe library, for what the browser (Stripe.js) and the Stripe dashboard do."""
    return stripe.StripeClient(SECRET_KEY, base_addresses={"api": localstripe.url}, max_network_retries=0)


@pytest.fixture
def invoice(organization: Organization) -> Invoice:
    return InvoiceFactory(organization=organization, currency="USD", total=Decimal("120.50"),
                          amount_due=Decimal("120.50"))  # fmt: skip


@pytest.fixture
def deliver(client: Client, django_capture_on_commit_callbacks: Any) -> Deliver:
    """POST an event to the webhook as Stripe does: the raw JSON body, signed with ``secret`` at
    ``timestamp`` (default: now); the processing task runs when the view's transaction commits."""

    def send(event: dict[str, Any], *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None,
             signature: str | None = None, body: str | None = None) -> Any:  # fmt: skip
        raw = body if body is not None else json.dumps(event)
        header = signature or stripe.WebhookSignature.generate_signature_header(raw, secret, timestamp)
        with django_capture_on_commit_callbacks(execute=True):
            return client.post("/webhooks/stripe/", data=raw, content_type="application/json",
                               HTTP_STRIPE_SIGNATURE=header)  # fmt: skip

    return send


def card(api: stripe.StripeClient, number: str = VISA) -> str:
    method = api.v1.payment_methods.create(
        params={"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"}}
    )
    return str(method.id)


def customer_with_card(api: stripe.StripeClient, number: str = VISA) -> tuple[str, str]:
    customer = api.v1.customers.create(params={"email": "billing@acme.test"})
    method = card(api, number)
    api.v1.payment_methods.attach(method, params={"customer": customer.id})
    return str(customer.id), method


def browser_pays(api: stripe.StripeClient, intent: str, number: str = VISA) -> Any:
    """What Stripe.js ``confirmCardPayment(client_secret, {payment_method: {card}})`` does: make a
    PaymentMethod from the card and confirm the PaymentIntent with it (localstripe wants the method
    set on the PaymentIntent before confirming)."""
    api.v1.payment_intents.update(intent, params={"payment_method": card(api, number)})
    return api.v1.payment_intents.confirm(intent)


def pay(client: APIClient, invoice: Invoice) -> Any:
    return client.post(f"/api/v1/invoices/{invoice.pk}/pay/", {}, format="json")


def intents_for(api: stripe.StripeClient, invoice: Invoice) -> list[Any]:
    listed = api.v1.payment_intents.list(params={"limit": 100}).data
    return [pi for pi in listed if pi.to_dict()["metadata"].get("invoice_id") == str(invoice.pk)]


def event_of(localstripe: LocalStripe, event_type: str, intent: str) -> dict[str, Any]:
    """The event localstripe made about ``intent`` (as it would deliver it)."""
    matching = [e for e in localstripe.events(event_type) if e["data"]["object"]["id"] == intent]
    assert matching, f"localstripe made no {event_type} event for {intent}"
    return matching[-1]


def stripe_event(event_type: str, obj: dict[str, Any], event_id: str) -> dict[str, Any]:
    """An event in Stripe's shape, for what localstripe does not emit."""
    return {"id": event_id, "object": "event", "api_version": "2026-10-28.endive", "created": int(time.time()),
            "type": event_type, "livemode": False, "data": {"object": obj}}  # fmt: skip


def paid_invoice(
    owner_client: APIClient, invoice: Invoice, api: stripe.StripeClient, localstripe: LocalStripe, deliver: Deliver
) -> tuple[Payment, dict[str, Any]]:
    """Pay the invoice end to end; returns the payment and the success event."""
    intent = pay(owner_client, invoice).json()["payment_intent"]
    assert browser_pays(api, intent).status == "succeeded"
    event = event_of(localstripe, "payment_intent.succeeded", intent)
    assert deliver(event).status_code == 200
    return Payment.objects.get(gateway_reference=intent), event


# --- Paying an invoice --------------------------------------------------------------------------


def test_pay_returns_a_client_secret_for_what_is_left_to_pay(
    owner_client: APIClient, invoice: Invoice, api: stripe.StripeClient
) -> None:
    invoice_payment_record(invoice_id=invoice.pk, amount=Decimal("20.50"))  # a bank transfer came in first
    response = pay(owner_client, invoice)
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["amount"], body["currency"], body["publishable_key"]) == ("100.00", "USD", PUBLISHABLE_KEY)
    assert body["stripe_js_url"] == "https://js.stripe.com/v3/"
    assert body["client_secret"].startswith(body["payment_intent"] + "_secret_")
    (intent,) = intents_for(api, invoice)
    assert (intent.id, intent.amount, intent.currency, intent.status) == (
        body["payment_intent"], 10000, "usd", "requires_payment_method")  # fmt: skip
    assert intent.metadata["idempotency_key"] == f"invoice:{invoice.pk}:attempt:1"
    payment = Payment.objects.get()
    assert (payment.pk, payment.attempt, payment.status, payment.amount) == (body["payment"], 1, "requires_payment",
                                                                             Decimal("100.00"))  # fmt: skip
    assert (payment.organization, payment.invoice, payment.gateway_reference) == (
        invoice.organization, invoice, intent.id)  # fmt: skip


def test_amounts_are_sent_in_the_currencys_minor_unit(organization: Organization, api: stripe.StripeClient) -> None:
    yen = InvoiceFactory(organization=organization, currency="JPY", total=Decimal("12345"), amount_due=Decimal("12345"))
    result = services.invoice_payment_intent_create(invoice_id=yen.pk)
    assert (result.amount, result.currency) == (Decimal("12345"), "JPY")
    (intent,) = intents_for(api, yen)
    assert (intent.amount, intent.currency) == (12345, "jpy")


def test_paying_again_reuses_the_open_payment_intent_and_updates_its_amount(
    owner_client: APIClient, invoice: Invoice, api: stripe.StripeClient
) -> None:
    first, second = pay(owner_client, invoice).json(), pay(owner_client, invoice).json()
    assert (second["payment_intent"], second["client_secret"]) == (first["payment_intent"], first["client_secret"])
    invoice_payment_record(invoice_id=invoice.pk, amount=Decimal("100.00"))  # paid partly by transfer meanwhile
    third = pay(owner_client, invoice).json()
    assert (third["payment_intent"], third["amount"]) == (first["payment_intent"], "20.50")
    (intent,) = intents_for(api, invoice)
    assert int(intent.amount) == 2050  # localstripe keeps an updated amount as the string it was sent
    assert Payment.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_workers_racing_make_one_payment_intent(api: stripe.StripeClient) -> None:
    invoice = InvoiceFactory(total=Decimal("99.00"), amount_due=Decimal("99.00"))
    start, results, errors = threading.Barrier(4), [], []

    def run() -> None:
        try:
            start.wait()
            results.append(services.invoice_payment_intent_create(invoice_id=invoice.pk).payment_intent)
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(results)) == 1 and len(results) == 4
    assert [pi.id for pi in intents_for(api, invoice)] == results[:1]
    assert Payment.objects.filter(invoice=invoice).count() == 1


@pytest.mark.django_db(transaction=True)
def test_localstripe_delivers_the_signed_success_to_the_live_server_and_the_invoice_is_paid(
    live_server: Any, localstripe: LocalStripe, api: stripe.StripeClient
) -> None:
    organization = OrganizationFactory(currency="USD")
    user = MembershipFactory(organization=organization, role=Role.BILLING_ADMIN).user
    # localstripe also sends this endpoint the events of earlier tests still being delivered, whose
    # metadata name their own invoices: an id no other test uses keeps them off this one.
    invoice = InvoiceFactory(id=987_654, organization=organization, total=Decimal("120.50"),
                             amount_due=Decimal("120.50"))  # fmt: skip
    localstripe.webhook("live", url=f"{live_server.url}/webhooks/stripe/", secret=WEBHOOK_SECRET,
                        events=["payment_intent.succeeded", "payment_intent.payment_failed"])  # fmt: skip
    portal = APIClient()
    portal.force_login(user)
    body = pay(portal, invoice).json()
    # The browser confirms with Stripe.js; our server never sees the card.
    assert browser_pays(api, body["payment_intent"]).status == "succeeded"
    deadline = time.monotonic() + 15
    while Invoice.objects.get(pk=invoice.pk).status != Invoice.Status.PAID and time.monotonic() < deadline:
        time.sleep(0.2)
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_paid) == (Invoice.Status.PAID, Decimal("120.50"))
    payment = Payment.objects.get(invoice=invoice)
    assert (payment.status, payment.amount, payment.charge_reference[:3]) == ("succeeded", Decimal("120.50"), "ch_")
    (event,) = [e for e in WebhookEvent.objects.filter(type="payment_intent.succeeded")
                if e.payload["data"]["object"]["id"] == body["payment_intent"]]  # fmt: skip
    assert (event.gateway, event.status, event.attempts) == ("stripe", "processed", 1)


def test_a_card_declined_by_the_bank_leaves_the_invoice_open_with_a_clear_message(
    owner_client: APIClient, invoice: Invoice, api: stripe.StripeClient, localstripe: LocalStripe, deliver: Deliver
) -> None:
    first = pay(owner_client, invoice).json()
    with pytest.raises(stripe.CardError) as declined:  # what Stripe.js shows the customer at once
        browser_pays(api, first["payment_intent"], DECLINED_ON_CHARGE)
    assert declined.value.code == "card_declined"
    assert deliver(event_of(localstripe, "payment_intent.payment_failed", first["payment_intent"])).status_code == 200
    payment = Payment.objects.get()
    assert (payment.status, payment.failure_code) == ("failed", "card_declined")
    assert payment.failure_message == decline_message("card_declined")
    assert "Contact your bank or use another payment method" in payment.failure_message
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_paid) == (Invoice.Status.OPEN, Decimal(0))

    # The next try is a new attempt with a new PaymentIntent; the failed one is canceled.
    second = pay(owner_client, invoice).json()
    assert (second["attempt"], second["last_error"]) == (2, decline_message("card_declined"))
    assert second["payment_intent"] != first["payment_intent"]
    assert api.v1.payment_intents.retrieve(first["payment_intent"]).status == "canceled"
    assert browser_pays(api, second["payment_intent"]).status == "succeeded"
    deliver(event_of(localstripe, "payment_intent.succeeded", second["payment_intent"]))
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.PAID
    assert Payment.objects.get(attempt=2).idempotency_key == f"invoice:{invoice.pk}:attempt:2"


def test_a_hard_decline_records_the_cards_fingerprint_from_the_failed_payment_method(
    owner_client: APIClient, invoice: Invoice, api: stripe.StripeClient, localstripe: LocalStripe, deliver: Deliver
) -> None:
    intent = pay(owner_client, invoice).json()["payment_intent"]
    with pytest.raises(stripe.CardError):
        browser_pays(api, intent, DECLINED_ON_CHARGE)
    event = copy.deepcopy(event_of(localstripe, "payment_intent.payment_failed", intent))
    event["data"]["object"]["last_payment_error"] = {  # Stripe's shape: the method expanded; localstripe's has none
        "type": "card_error", "code": "card_declined", "decline_code": "stolen_card",
        "payment_method": {"id": "pm_FAKE_stolen", "object": "payment_method", "type": "card",
                           "card": {"brand": "visa", "last4": "0341", "fingerprint": "fp_FAKE_stolen_card"}},
    }  # fmt: skip
    assert deliver(event).status_code == 200
    payment = Payment.objects.get(gateway_reference=intent)
    assert (payment.status, payment.failure_code, payment.card_fingerprint, payment.payment_method_type) == (
        "failed", "stolen_card", "fp_FAKE_stolen_card", "card")  # fmt: skip
    assert DunningCase.objects.get(invoice=invoice).state == DunningCase.State.ACTIVE


def test_a_card_declined_when_attached_is_not_saved_and_a_good_one_is(
    organization: Organization, api: stripe.StripeClient
) -> None:
    customer = services.stripe_customer_reference(organization=organization)
    assert customer.startswith("cus_")
    with pytest.raises(PaymentDeclined) as declined:
        payment_method_save(organization=organization, gateway="stripe", token=card(api, DECLINED_ON_ATTACH),
                            customer_reference=customer)  # fmt: skip
    assert (declined.value.decline_code, declined.value.message) == ("card_declined", decline_message("card_declined"))
    assert not organization_methods(organization)
    saved = payment_method_save(
        organization=organization, gateway="stripe", token=card(api), customer_reference=customer
    )
    assert (saved.gateway, saved.label, saved.exp_month, saved.exp_year, saved.is_default) == (
        "stripe", "Visa •••• 4242", 12, 2030, True)  # fmt: skip
    assert api.v1.payment_methods.retrieve(saved.gateway_reference).customer == customer
    assert services.stripe_customer_reference(organization=organization) == customer  # reused, not a second one


def test_a_card_whose_saving_needs_3d_secure_is_not_saved_and_the_customer_is_sent_to_the_portal(
    organization: Organization, api: stripe.StripeClient, settings: Any
) -> None:
    customer = services.stripe_customer_reference(organization=organization)
    with pytest.raises(PaymentNeedsAction) as needs:
        payment_method_save(organization=organization, gateway="stripe", token=card(api, NEEDS_AUTHENTICATION),
                            customer_reference=customer)  # fmt: skip
    assert needs.value.action_url == f"{settings.SITE_URL}/payment-methods/"
    assert needs.value.gateway_reference.startswith("pm_")
    assert not organization_methods(organization)


def organization_methods(organization: Organization) -> list[Any]:
    from billing.payments.models import PaymentMethod

    return list(PaymentMethod.objects.filter(organization=organization))


# --- Webhooks -----------------------------------------------------------------------------------


def test_a_duplicate_delivery_is_processed_once(
    owner_client: APIClient, invoice: Invoice, api: stripe.StripeClient, localstripe: LocalStripe, deliver: Deliver
) -> None:
    _payment, event = paid_invoice(owner_client, invoice, api, localstripe, deliver)
    again = deliver(event)
    assert again.status_code == 200
    assert again.json() == {"received": True, "event": event["id"], "duplicate": True}
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_paid) == (Invoice.Status.PAID, Decimal("120.50"))
    stored = WebhookEvent.objects.get()
    assert (stored.event_id, stored.status, stored.attempts) == (event["id"], "processed", 1)


def test_a_forged_or_tampered_delivery_is_refused_and_nothing_is_stored(
    owner_client: APIClient, invoice: Invoice, api: stripe.StripeClient, localstripe: LocalStripe, deliver: Deliver
) -> None:
    intent = pay(owner_client, invoice).json()["payment_intent"]
    browser_pays(api, intent)
    event = event_of(localstripe, "payment_intent.succeeded", intent)
    wrong_secret = deliver(event, secret="whsec_FAKE_attacker")
    assert wrong_secret.status_code == 400
    assert wrong_secret.json()["error"]["code"] == "webhook_invalid"
    signed = stripe.WebhookSignature.generate_signature_header(json.dumps(event), WEBHOOK_SECRET)
    tampered = copy.deepcopy(event)
    tampered["data"]["object"]["amount"] = 999999
    assert deliver(tampered, signature=signed).status_code == 400
    assert deliver(event, signature="t=123").status_code == 400
    unsigned = Client().post("/webhooks/stripe/", data=json.dumps(event), content_type="application/json")
    assert unsigned.status_code == 400
    signed_junk = stripe.WebhookSignature.generate_signature_header("not json", WEBHOOK_SECRET)
    assert deliver({}, body="not json", signature=signed_junk).status_code == 400
    assert WebhookEvent.objects.count() == 0
    assert Payment.objects.get().status == "requires_payment"
    invoice.refresh_from_db()
    assert invoice.amount_paid == Decimal(0)


def test_a_stale_signature_is_refused(
    owner_client: APIClient, invoice: Invoice, api: stripe.StripeClient, localstripe: LocalStripe, deliver: Deliver
) -> None:
    intent = pay(owner_client, invoice).json()["payment_intent"]
    browser_pays(api, intent)
    event = event_of(localstripe, "payment_intent.succeeded", intent)
    replayed = deliver(event, timestamp=int(time.time()) - 301)  # outside the 5-minute tolerance
    assert replayed.status_code == 400
    assert "tolerance" in replayed.json()["error"]["message"]
    assert WebhookEvent.objects.count() == 0
    assert deliver(event, timestamp=int(time.time()) - 240).status_code == 200  # inside it
    assert WebhookEvent.objects.get().status == "processed"


def test_the_webhook_only_takes_post(client: Client) -> None:
    assert client.get("/webhooks/stripe/").status_code == 405


def test_a_late_failure_after_success_does_not_undo_it_and_success_after_failure_wins(
    owner_client: APIClient, invoice: Invoice, api: stripe.StripeClient, localstripe: LocalStripe, deliver: Deliver
) -> None:
    payment, succeeded = paid_invoice(owner_client, invoice, api, localstripe, deliver)
    failed = copy.deepcopy(succeeded)
    failed.update(id="evt_late_failure", type="payment_intent.payment_failed")
    error = {"code": "card_declined", "decline_code": "insufficient_funds"}
    failed["data"]["object"].update(status="requires_payment_method", last_payment_error=error)
    assert deliver(failed).status_code == 200
    payment.refresh_from_db()
    invoice.refresh_from_db()
    assert (payment.status, payment.failure_code, invoice.status) == ("succeeded", "", Invoice.Status.PAID)
    assert WebhookEvent.objects.get(event_id="evt_late_failure").status == "ignored"

    # The other order on another invoice: the failure, then the success of the retried payment.
    other = InvoiceFactory(organization=invoice.organization, total=Decimal("5.00"), amount_due=Decimal("5.00"),
                           period_start=date(2026, 9, 1), period_end=date(2026, 9, 30))  # fmt: skip
    intent = pay(owner_client, other).json()["payment_intent"]
    browser_pays(api, intent)
    success = event_of(localstripe, "payment_intent.succeeded", intent)
    failure = copy.deepcopy(success)
    failure.update(id="evt_earlier_failure", type="payment_intent.payment_failed")
    failure["data"]["object"]["last_payment_error"] = {"code": "card_declined", "decline_code": "do_not_honor"}
    deliver(failure)
    assert Payment.objects.get(gateway_reference=intent).failure_code == "do_not_honor"
    deliver(success)
    other.refresh_from_db()
    assert (other.status, Payment.objects.get(gateway_reference=intent).status) == (Invoice.Status.PAID, "succeeded")


@pytest.mark.parametrize("where", ["payment_intent.succeeded", "charge.succeeded"])
def test_a_google_pay_wallet_is_recorded(
    where: str, owner_client: APIClient, invoice: Invoice, api: stripe.StripeClient, localstripe: LocalStripe,
    deliver: Deliver,
) -> None:  # fmt: skip
    intent = pay(owner_client, invoice).json()["payment_intent"]
    browser_pays(api, intent)
    event = copy.deepcopy(event_of(localstripe, "payment_intent.succeeded", intent))
    charge = event["data"]["object"]["latest_charge"]
    charge["payment_method_details"] = {  # Stripe's shape; localstripe leaves it out
        "type": "card",
        "card": {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2030, "network": "visa",
                 "wallet": {"type": "google_pay", "google_pay": {}, "dynamic_last4": "4242"}},
    }  # fmt: skip
    if where == "charge.succeeded":
        deliver(stripe_event("charge.succeeded", charge, "evt_charge_succeeded"))
        event["data"]["object"]["latest_charge"] = charge["id"]  # as Stripe sends it: an id
        event["data"]["object"].pop("charges", None)
    deliver(event)
    payment = Payment.objects.get()
    assert (payment.status, payment.payment_method_type, payment.wallet) == ("succeeded", "card", "google_pay")
    assert payment.charge_reference == charge["id"]


def test_a_refund_without_a_credit_note_leaves_that_much_owed_again(
    owner_client: APIClient, invoice: Invoice, api: stripe.StripeClient, localstripe: LocalStripe, deliver: Deliver
) -> None:
    payment, _event = paid_invoice(owner_client, invoice, api, localstripe, deliver)
    services.payment_refund(payment_id=payment.pk, amount=Decimal("20.50"), reason="goodwill")
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_refunded, invoice.balance_due) == (
        Invoice.Status.PARTIALLY_PAID, Decimal("20.50"), Decimal("20.50"))  # fmt: skip


def test_a_credit_note_on_a_paid_invoice_refunds_the_card_once(
    owner_client: APIClient,
    invoice: Invoice,
    api: stripe.StripeClient,
    localstripe: LocalStripe,
    deliver: Deliver,
    django_capture_on_commit_callbacks: Any,
) -> None:
    from billing.invoicing.services import credit_note_issue
    from billing.payments.refunds import credit_note_refund

    payment, _event = paid_invoice(owner_client, invoice, api, localstripe, deliver)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        note = credit_note_issue(invoice_id=invoice.pk, amount=Decimal("20.00"), reason="Duplicate usage on 3 Oct")
    assert len(callbacks) == 1  # the refund task, after commit
    note.refresh_from_db()
    assert (note.refund_amount, note.amount_refunded) == (Decimal("20.00"), Decimal("20.00"))
    payment.refresh_from_db()
    assert (payment.status, payment.amount_refunded) == ("succeeded", Decimal("20.00"))
    charge = api.v1.charges.retrieve(payment.charge_reference)
    assert (charge.amount_refunded, charge.refunded) == (2000, False)
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_credited, invoice.amount_refunded, invoice.balance_due) == (
        Invoice.Status.PAID, Decimal("20.00"), Decimal("20.00"), Decimal("0"))  # fmt: skip
    (refund,) = AuditEvent.objects.filter(action="invoice.refund", object_id=str(invoice.pk))
    assert (Decimal(refund.before["amount_refunded"]), Decimal(refund.after["amount_refunded"])) == (
        0,
        Decimal("20.00"),
    )
    # The task runs again (a redelivery, a retry): nothing more is refunded.
    credit_note_refund(credit_note_id=note.pk)
    assert api.v1.charges.retrieve(payment.charge_reference).amount_refunded == 2000
    assert Payment.objects.get(pk=payment.pk).amount_refunded == Decimal("20.00")


def test_refunds_and_disputes_are_recorded(
    owner_client: APIClient, invoice: Invoice, api: stripe.StripeClient, localstripe: LocalStripe, deliver: Deliver
) -> None:
    payment, _event = paid_invoice(owner_client, invoice, api, localstripe, deliver)
    payment = services.payment_refund(payment_id=payment.pk, amount=Decimal("20.50"), reason="duplicate line")
    assert (payment.status, payment.amount_refunded) == ("succeeded", Decimal("20.50"))
    charge = api.v1.charges.retrieve(payment.charge_reference)
    assert (charge.amount_refunded, charge.refunded) == (2050, False)
    with pytest.raises(services.PaymentNotRefundable):
        services.payment_refund(payment_id=payment.pk, amount=Decimal("100.01"))
    services.payment_refund(payment_id=payment.pk)  # the rest
    # localstripe sends no charge.refunded: deliver Stripe's event for the refunded charge.
    refunded = api.v1.charges.retrieve(payment.charge_reference).to_dict()
    assert refunded["refunded"] is True
    deliver(stripe_event("charge.refunded", refunded, "evt_refunded"))
    payment.refresh_from_db()
    assert (payment.status, payment.amount_refunded, payment.refunded_at is not None) == (
        "refunded", Decimal("120.50"), True)  # fmt: skip

    dispute = {"id": "dp_FAKE_1", "object": "dispute", "amount": 12050, "currency": "usd", "reason": "fraudulent",
               "status": "needs_response", "charge": payment.charge_reference,
               "payment_intent": payment.gateway_reference}  # fmt: skip
    deliver(stripe_event("charge.dispute.created", dispute, "evt_dispute"))
    payment.refresh_from_db()
    assert (payment.status, payment.dispute_reason) == ("disputed", "fraudulent")
    (disputed,) = AuditEvent.objects.filter(action="payment.dispute", object_id=str(payment.pk))
    assert (disputed.before["status"], disputed.after["status"], disputed.after["dispute_reason"]) == (
        "refunded", "disputed", "fraudulent")  # fmt: skip
    invoice.refresh_from_db()
    assert invoice.amount_paid == Decimal("120.50")  # an open dispute moves no money (a lost one does, below)


@pytest.mark.parametrize(("outcome", "charged_back", "balance"), [("lost", "120.50", "120.50"), ("won", "0", "0")])
def test_a_lost_dispute_leaves_the_invoice_owed_again_and_a_won_one_changes_nothing(
    owner_client: APIClient, invoice: Invoice, api: stripe.StripeClient, localstripe: LocalStripe, deliver: Deliver,
    outcome: str, charged_back: str, balance: str,
) -> None:  # fmt: skip
    payment, _event = paid_invoice(owner_client, invoice, api, localstripe, deliver)
    dispute = {"id": "dp_FAKE_2", "object": "dispute", "amount": 12050, "currency": "usd", "reason": "fraudulent",
               "status": "needs_response", "charge": payment.charge_reference,
               "payment_intent": payment.gateway_reference}  # fmt: skip
    deliver(stripe_event("charge.dispute.created", dispute, "evt_dispute_opened"))
    invoice.refresh_from_db()
    assert (invoice.status, invoice.balance_due) == (Invoice.Status.PAID, Decimal(0))  # open: nothing moved yet
    closed = stripe_event("charge.dispute.closed", {**dispute, "status": outcome}, "evt_dispute_closed")
    deliver(closed)
    deliver({**closed, "id": "evt_dispute_closed_again"})  # the same outcome told twice
    payment.refresh_from_db()
    assert (payment.status, payment.dispute_status, payment.amount_charged_back) == (
        "disputed", outcome, Decimal(charged_back))  # fmt: skip
    invoice.refresh_from_db()
    assert (invoice.amount_paid, invoice.amount_refunded, invoice.balance_due) == (
        Decimal("120.50"), Decimal(charged_back), Decimal(balance))  # fmt: skip
    assert invoice.status == (Invoice.Status.OPEN if outcome == "lost" else Invoice.Status.PAID)
    chargebacks = AuditEvent.objects.filter(action="payment.chargeback", object_id=str(payment.pk))
    assert chargebacks.count() == (1 if outcome == "lost" else 0)


def test_a_processing_error_is_recorded_and_retried(
    owner_client: APIClient, invoice: Invoice, api: stripe.StripeClient, localstripe: LocalStripe,
    deliver: Deliver, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    intent = pay(owner_client, invoice).json()["payment_intent"]
    browser_pays(api, intent)
    event = event_of(localstripe, "payment_intent.succeeded", intent)

    def broken(**kwargs: Any) -> None:
        raise RuntimeError("database hiccup")

    monkeypatch.setattr(services, "invoice_payment_record", broken)
    assert deliver(event).status_code == 200  # acknowledged: Stripe need not deliver again
    stored = WebhookEvent.objects.get()
    assert (stored.status, stored.error) == ("failed", "RuntimeError: database hiccup")
    assert Payment.objects.get().status == "requires_payment"  # rolled back with the error
    monkeypatch.undo()
    services.webhook_events_retry(now=stored.received_at + services.WEBHOOK_RETRY_AFTER)
    stored.refresh_from_db()
    invoice.refresh_from_db()
    assert (stored.status, stored.attempts, invoice.status) == ("processed", 2, Invoice.Status.PAID)


# --- Who may pay what ---------------------------------------------------------------------------


def test_only_billing_admins_pay_their_own_open_invoices(
    owner_client: APIClient, viewer: User, invoice: Invoice, other_organization: Organization, settings: Any
) -> None:
    viewer_client = APIClient()
    viewer_client.force_login(viewer)
    assert pay(viewer_client, invoice).status_code == 403
    theirs = InvoiceFactory(organization=other_organization)
    assert pay(owner_client, theirs).status_code == 404
    draft = InvoiceFactory(organization=invoice.organization, status=Invoice.Status.DRAFT, number=None,
                           period_start=date(2026, 9, 1), period_end=date(2026, 9, 30))  # fmt: skip
    assert pay(owner_client, draft).status_code == 404
    paid = InvoiceFactory(organization=invoice.organization, status=Invoice.Status.PAID, amount_paid=Decimal("10.00"),
                          period_start=date(2026, 8, 1), period_end=date(2026, 8, 31))  # fmt: skip
    refused = pay(owner_client, paid)
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "invoice_not_payable")
    settings.STRIPE_SECRET_KEY = ""
    unavailable = pay(owner_client, invoice)
    assert (unavailable.status_code, unavailable.json()["error"]["code"]) == (503, "payments_unavailable")
    assert Payment.objects.filter(gateway_reference__gt="").count() == 0


# --- The gateway contract -----------------------------------------------------------------------


def test_the_gateway_maps_stripe_failures_to_the_contract(settings: Any, api: stripe.StripeClient) -> None:
    gateway = gateway_for("stripe")
    assert isinstance(gateway, StripeGateway)
    customer, method = customer_with_card(api, DECLINED_ON_CHARGE)

    def charge(payment_method: str, key: str) -> Any:
        return gateway.charge(ChargeRequest(amount=Decimal("10.00"), currency="EUR", payment_method=payment_method,
                                            customer_reference=customer, idempotency_key=key))  # fmt: skip

    with pytest.raises(PaymentDeclined) as declined:
        charge(method, "test:declined")
    assert (declined.value.decline_code, declined.value.message) == ("card_declined", decline_message("card_declined"))
    with pytest.raises(PaymentConfigurationError):
        charge("pm_does_not_exist", "test:unknown")
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # nothing listens
    with pytest.raises(PaymentTemporaryFailure):
        charge(method, "test:unreachable")


# --- Off-session top-ups ------------------------------------------------------------------------


def stripe_top_up(account: VendorAccount, api: stripe.StripeClient, number: str = VISA) -> TopUp:
    from billing.payments.models import PaymentMethod

    customer, method = customer_with_card(api, number)
    saved = PaymentMethod.objects.create(organization=account.organization, gateway="stripe", gateway_reference=method,
                                         customer_reference=customer, brand="visa", last4=number[-4:], exp_month=12,
                                         exp_year=2030)  # fmt: skip
    TopUpRuleFactory(organization=account.organization, vendor_account=account, primary_method=saved)
    credit_purchase_record(vendor_account=account, amount=Decimal("80.00"), currency="USD", kind="purchase",
                           effective_at=datetime(2026, 11, 1, tzinfo=UTC))  # fmt: skip
    (top_up,) = top_up_rules_evaluate(vendor_account=account, today=TODAY)
    return top_up


def test_an_off_session_top_up_through_stripe_credits_the_ledger_once(
    vendor_account: VendorAccount, api: stripe.StripeClient, localstripe: LocalStripe, deliver: Deliver
) -> None:
    top_up = top_up_charge(top_up_id=stripe_top_up(vendor_account, api).pk)
    assert (top_up.status, top_up.gateway, top_up.gateway_reference[:3]) == ("succeeded", "stripe", "pi_")
    intent = api.v1.payment_intents.retrieve(top_up.gateway_reference)
    assert (intent.amount, intent.currency, intent.status) == (50000, "usd", "succeeded")
    assert intent.metadata["top_up"] == str(top_up.pk)
    top_up_charge(top_up_id=top_up.pk)  # the task delivered twice: no second charge
    assert len(api.v1.payment_intents.list(params={"limit": 100}).data) == 1
    # Stripe's success event arrives too: recorded, not credited again.
    deliver(event_of(localstripe, "payment_intent.succeeded", top_up.gateway_reference))
    assert LedgerTransaction.objects.filter(kind="vendor_topup").count() == 1
    payment = Payment.objects.get()
    assert (payment.top_up, payment.invoice, payment.status, payment.amount) == (
        top_up, None, "succeeded", Decimal("500.00"))  # fmt: skip
    assert payment.idempotency_key == f"topup:{top_up.pk}:attempt:1"


def test_a_declined_top_up_is_not_credited(
    vendor_account: VendorAccount, api: stripe.StripeClient, localstripe: LocalStripe, deliver: Deliver
) -> None:
    top_up = top_up_charge(top_up_id=stripe_top_up(vendor_account, api, DECLINED_ON_CHARGE).pk)
    attempt = TopUpAttempt.objects.get()
    assert (attempt.outcome, attempt.decline_code, attempt.message) == (
        "declined", "card_declined", decline_message("card_declined"))  # fmt: skip
    assert top_up.status == "pending"  # retried tomorrow, per the top-up schedule
    (failed,) = localstripe.events("payment_intent.payment_failed")
    deliver(failed)
    payment = Payment.objects.get()
    assert (payment.top_up, payment.status, payment.failure_code) == (top_up, "failed", "card_declined")
    assert not LedgerTransaction.objects.filter(kind="vendor_topup").exists()


def test_a_top_up_card_that_needs_authentication_asks_the_customer(
    vendor_account: VendorAccount, api: stripe.StripeClient, settings: Any
) -> None:
    top_up = top_up_charge(top_up_id=stripe_top_up(vendor_account, api, NEEDS_AUTHENTICATION).pk)
    assert (top_up.status, top_up.last_decline_code) == ("action_required", "authentication_required")
    assert top_up.gateway_reference.startswith("pi_")
    assert top_up.action_url == f"{settings.SITE_URL}/payments/confirm/{top_up.gateway_reference}/"
    assert not LedgerTransaction.objects.filter(kind="vendor_topup").exists()


def test_the_new_models_are_tenant_scoped_where_they_hold_customer_data() -> None:
    from aggregator.tenancy.scoping import TenantModel

    assert issubclass(Payment, TenantModel)
    assert not issubclass(WebhookEvent, TenantModel)  # the organization is known only once processed


# --- Other open attempts once a payment settled the invoice ----------------------------------------


def paid_elsewhere(invoice: Invoice) -> Payment:
    """A PayPal capture of the whole invoice, as ``paypal_services`` records it."""
    from billing.invoicing.services import invoice_payment_record

    payment = Payment.objects.create(
        organization=invoice.organization, invoice=invoice, gateway="paypal", gateway_reference="ORDER-FAKE-1",
        amount=invoice.amount_due, currency="USD", idempotency_key=f"invoice:{invoice.pk}:attempt:9",
        status=Payment.Status.SUCCEEDED, succeeded_at=timezone.now(),
    )  # fmt: skip
    invoice_payment_record(invoice_id=invoice.pk, amount=invoice.amount_due)
    return payment


def test_once_paid_another_way_the_open_card_payment_intent_is_canceled_and_cannot_pay(
    owner_client: APIClient, invoice: Invoice, api: stripe.StripeClient, localstripe: LocalStripe
) -> None:
    from billing.payments.attempts import invoice_open_attempts_close

    intent = pay(owner_client, invoice).json()["payment_intent"]  # a tab left open with the card form
    assert invoice_open_attempts_close(invoice_id=invoice.pk) == []  # nothing paid yet: it stays usable
    paid_elsewhere(invoice)
    (closed,) = invoice_open_attempts_close(invoice_id=invoice.pk)
    assert (closed.gateway_reference, closed.status, closed.failure_code) == (intent, "failed", "canceled")
    assert api.v1.payment_intents.retrieve(intent).status == "canceled"
    with pytest.raises(stripe.InvalidRequestError):
        browser_pays(api, intent)  # the old tab can no longer pay
    assert invoice_open_attempts_close(invoice_id=invoice.pk) == []  # run twice: nothing more to do
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_paid) == (Invoice.Status.PAID, Decimal("120.50"))


def test_a_card_payment_already_under_way_is_left_to_its_event(
    owner_client: APIClient, invoice: Invoice, api: stripe.StripeClient, localstripe: LocalStripe, deliver: Deliver
) -> None:
    from billing.payments.attempts import invoice_open_attempts_close

    intent = pay(owner_client, invoice).json()["payment_intent"]
    assert browser_pays(api, intent).status == "succeeded"  # its event is still on its way
    paid_elsewhere(invoice)
    assert invoice_open_attempts_close(invoice_id=invoice.pk) == []
    assert Payment.objects.get(gateway_reference=intent).status == "processing"
    deliver(event_of(localstripe, "payment_intent.succeeded", intent))
    invoice.refresh_from_db()  # paid twice: the balance shows what to refund
    assert (invoice.amount_paid, invoice.balance_due) == (Decimal("241.00"), Decimal("-120.50"))


def test_a_card_payment_that_settles_the_invoice_closes_its_open_paypal_order(
    owner_client: APIClient, invoice: Invoice, api: stripe.StripeClient, localstripe: LocalStripe, deliver: Deliver
) -> None:
    order = Payment.objects.create(
        organization=invoice.organization, invoice=invoice, gateway="paypal", gateway_reference="ORDER-FAKE-OPEN",
        amount=invoice.amount_due, currency="USD", idempotency_key=f"invoice:{invoice.pk}:attempt:7",
    )  # fmt: skip
    intent = pay(owner_client, invoice).json()["payment_intent"]
    browser_pays(api, intent)
    deliver(event_of(localstripe, "payment_intent.succeeded", intent))  # the task runs after its commit
    order.refresh_from_db()
    assert (order.status, order.failure_code, order.failure_message) == (
        "failed", "canceled", "The invoice was paid another way.")  # fmt: skip
    assert Payment.objects.get(gateway_reference=intent).status == "succeeded"


# --- Payments whose event never came ---------------------------------------------------------------


def stuck_processing(intent: str, *, for_hours: float) -> None:
    Payment.objects.filter(gateway_reference=intent).update(
        status=Payment.Status.PROCESSING, updated_at=timezone.now() - timedelta(hours=for_hours)
    )


def test_a_payment_whose_success_event_never_came_is_applied_from_stripe_once(
    owner_client: APIClient, invoice: Invoice, api: stripe.StripeClient, localstripe: LocalStripe, deliver: Deliver
) -> None:
    from billing.payments.reconcile import payments_reconcile

    intent = pay(owner_client, invoice).json()["payment_intent"]
    assert browser_pays(api, intent).status == "succeeded"
    stuck_processing(intent, for_hours=0.5)
    assert payments_reconcile(now=timezone.now()) == []  # not an hour yet: its event may still come
    stuck_processing(intent, for_hours=2)
    (event,) = payments_reconcile(now=timezone.now())
    assert (event.event_id, event.type, event.status) == (
        f"reconcile_{intent}_succeeded", "payment_intent.succeeded", "processed")  # fmt: skip
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_paid) == (Invoice.Status.PAID, Decimal("120.50"))
    assert Payment.objects.get(gateway_reference=intent).status == "succeeded"
    assert payments_reconcile(now=timezone.now()) == []  # run again: nothing is stuck any more
    deliver(event_of(localstripe, "payment_intent.succeeded", intent))  # Stripe's own event, late
    invoice.refresh_from_db()
    assert invoice.amount_paid == Decimal("120.50")  # applied once


def test_a_payment_that_failed_at_stripe_is_failed_and_dunned(
    owner_client: APIClient, invoice: Invoice, api: stripe.StripeClient, localstripe: LocalStripe
) -> None:
    from billing.payments.reconcile import payments_reconcile

    intent = pay(owner_client, invoice).json()["payment_intent"]
    with pytest.raises(stripe.CardError):
        browser_pays(api, intent, DECLINED_ON_CHARGE)
    stuck_processing(intent, for_hours=3)
    (event,) = payments_reconcile(now=timezone.now())
    assert (event.type, event.status) == ("payment_intent.payment_failed", "processed")
    payment = Payment.objects.get(gateway_reference=intent)
    assert (payment.status, payment.failure_code) == ("failed", "card_declined")
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.OPEN
    assert DunningCase.objects.get(invoice=invoice).state == DunningCase.State.ACTIVE

"""The pay page and the payment methods page over real HTTP against localstripe.

What the browser does is replayed with the same requests localstripe's Stripe.js stand-in makes
(``createToken``, ``confirmCardPayment``'s 3-D Secure ``_authenticate``, ``confirmCardSetup``),
with the publishable key only; localstripe's own events are signed and delivered to the webhook.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
import pytest
import stripe
from django.test import Client

from aggregator.tenancy.models import Organization, User
from billing.invoicing.models import Invoice
from billing.payments.gateways.base import decline_message
from billing.payments.models import PaymentMethod
from billing.payments.records import Payment
from tests.billing import localstripe as localstripe_fixtures
from tests.billing.localstripe import (
    PUBLISHABLE_KEY,
    SECRET_KEY,
    LocalStripe,
    event_deliverer,
    stripe_settings_for,
)
from tests.factories import InvoiceFactory, MembershipFactory, OrganizationFactory, TopUpRuleFactory

localstripe_server = localstripe_fixtures.localstripe_server
localstripe = localstripe_fixtures.localstripe

VISA = "4242424242424242"
MASTERCARD = "5555555555554444"
NEEDS_AUTHENTICATION = "4000002760003184"
DECLINED_ON_CHARGE = "4000000000000341"


@pytest.fixture(autouse=True)
def stripe_settings(settings: Any, localstripe: LocalStripe) -> None:
    stripe_settings_for(settings, localstripe)


@pytest.fixture
def portal(owner: User) -> Client:
    client = Client()
    client.force_login(owner)
    return client


@pytest.fixture
def invoice(organization: Organization) -> Invoice:
    return InvoiceFactory(organization=organization, total=Decimal("120.50"), amount_due=Decimal("120.50"))


class Browser:
    """The requests localstripe's Stripe.js stand-in sends (publishable key, no secret)."""

    def __init__(self, localstripe: LocalStripe) -> None:
        self.http = httpx.Client(base_url=localstripe.url, timeout=10)

    def create_token(self, number: str) -> str:
        response = self.http.post(
            "/v1/tokens",
            data={
                "card[number]": number,
                "card[exp_month]": "12",
                "card[exp_year]": "2030",
                "card[cvc]": "123",
                "key": PUBLISHABLE_KEY,
                "payment_user_agent": "localstripe",
            },
        )
        assert response.status_code == 200, response.text
        return str(response.json()["id"])

    def authenticate(self, client_secret: str, *, success: bool) -> dict[str, Any]:
        intent = client_secret.split("_secret_")[0]
        response = self.http.post(
            f"/v1/payment_intents/{intent}/_authenticate?success={str(success).lower()}",
            content=json.dumps({"key": PUBLISHABLE_KEY, "client_secret": client_secret}),
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def confirm_card_setup(self, client_secret: str, number: str) -> httpx.Response:
        setup = client_secret.split("_secret_")[0]
        return self.http.post(
            f"/v1/setup_intents/{setup}/confirm",
            content=json.dumps(
                {
                    "key": PUBLISHABLE_KEY,
                    "use_stripe_sdk": True,
                    "client_secret": client_secret,
                    "payment_method_data": {
                        "type": "card",
                        "card": {"number": number, "exp_month": "12", "exp_year": "2030", "cvc": "123"},
                        "billing_details": {"address": {"postal_code": "10115"}},
                    },
                }
            ),
        )


@pytest.fixture
def browser(localstripe: LocalStripe) -> Any:
    client = Browser(localstripe)
    yield client
    client.http.close()


@pytest.fixture
def deliver(client: Client, django_capture_on_commit_callbacks: Any, localstripe: LocalStripe) -> Any:
    """Deliver localstripe's event about ``intent`` to the webhook, signed as Stripe signs it."""
    return event_deliverer(client=client, capture=django_capture_on_commit_callbacks, server=localstripe)


def api(localstripe: LocalStripe) -> stripe.StripeClient:
    return stripe.StripeClient(SECRET_KEY, base_addresses={"api": localstripe.url}, max_network_retries=0)


def status(portal: Client, invoice: Invoice, intent: str = "") -> dict[str, Any]:
    query = f"?payment_intent={intent}" if intent else ""
    return dict(portal.get(f"/invoices/{invoice.pk}/pay/status/{query}").json())


# --- Paying an invoice --------------------------------------------------------------------------


def test_a_card_payment_is_processing_until_the_webhook_marks_the_invoice_paid(
    portal: Client, invoice: Invoice, browser: Browser, deliver: Any, localstripe: LocalStripe
) -> None:
    page = portal.get(f"/invoices/{invoice.pk}/pay/").content.decode()
    assert f'<script src="{localstripe.url}/js.stripe.com/v3/"></script>' in page
    response = portal.post(f"/invoices/{invoice.pk}/pay/confirm/", {"token": browser.create_token(VISA)})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "succeeded" and "client_secret" not in body
    intent = api(localstripe).v1.payment_intents.retrieve(body["payment_intent"])
    assert (intent.amount, intent.currency, intent.status) == (12050, "usd", "succeeded")
    assert intent.metadata["idempotency_key"] == f"invoice:{invoice.pk}:attempt:1"
    payment = Payment.objects.get()
    assert (payment.status, payment.amount, payment.gateway_reference) == ("processing", Decimal("120.50"), intent.id)
    assert status(portal, invoice, intent.id)["state"] == "processing"
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.OPEN  # the browser's word does not pay an invoice

    deliver("payment_intent.succeeded", intent.id)
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_paid) == (Invoice.Status.PAID, Decimal("120.50"))
    assert status(portal, invoice, intent.id) | {"payment": None} == {
        "state": "paid",
        "invoice_status": "paid",
        "left": "0.00",
        "currency": "USD",
        "payment": None,
    }
    page = portal.get(f"/invoices/{invoice.pk}/pay/").content.decode()
    assert 'data-state="paid"' in page and "Paid. Thank you!" in page


def test_a_card_that_needs_3d_secure_is_finished_by_confirm_card_payment(
    portal: Client, invoice: Invoice, browser: Browser, deliver: Any, localstripe: LocalStripe
) -> None:
    body = portal.post(f"/invoices/{invoice.pk}/pay/confirm/", {"token": browser.create_token(NEEDS_AUTHENTICATION)})
    body = body.json()
    assert body["status"] == "requires_action"
    assert body["client_secret"].startswith(body["payment_intent"] + "_secret_")
    assert Payment.objects.get().status == Payment.Status.REQUIRES_PAYMENT
    assert browser.authenticate(body["client_secret"], success=True)["status"] == "succeeded"
    deliver("payment_intent.succeeded", body["payment_intent"])
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_paid) == (Invoice.Status.PAID, Decimal("120.50"))


def test_after_a_failed_3d_secure_the_customer_pays_the_same_attempt_with_another_card(
    portal: Client, invoice: Invoice, browser: Browser, deliver: Any
) -> None:
    first = portal.post(f"/invoices/{invoice.pk}/pay/confirm/", {"token": browser.create_token(NEEDS_AUTHENTICATION)})
    failed = browser.authenticate(first.json()["client_secret"], success=False)
    assert failed["status"] == "requires_payment_method"
    assert failed["last_payment_error"]["code"] == "payment_intent_authentication_failure"
    second = portal.post(f"/invoices/{invoice.pk}/pay/confirm/", {"token": browser.create_token(VISA)}).json()
    assert (second["status"], second["payment_intent"]) == ("succeeded", first.json()["payment_intent"])
    deliver("payment_intent.succeeded", second["payment_intent"])
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.PAID
    assert Payment.objects.get().status == Payment.Status.SUCCEEDED


def test_a_declined_card_gets_the_decline_message_and_the_invoice_stays_open(
    portal: Client, invoice: Invoice, browser: Browser, deliver: Any, localstripe: LocalStripe
) -> None:
    response = portal.post(f"/invoices/{invoice.pk}/pay/confirm/", {"token": browser.create_token(DECLINED_ON_CHARGE)})
    assert response.status_code == 402
    assert response.json()["error"] == {"code": "card_declined", "message": decline_message("card_declined")}
    payment = Payment.objects.get()
    deliver("payment_intent.payment_failed", payment.gateway_reference)
    payment.refresh_from_db()
    assert (payment.status, payment.failure_message) == ("failed", decline_message("card_declined"))
    assert status(portal, invoice, payment.gateway_reference)["payment"]["status"] == "failed"
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.OPEN
    assert "Your bank declined the payment" in portal.get(f"/invoices/{invoice.pk}/").content.decode()


def test_the_intent_endpoint_gives_the_wallet_a_client_secret_never_put_in_the_page(
    portal: Client, invoice: Invoice, deliver: Any, localstripe: LocalStripe
) -> None:
    body = portal.post(f"/invoices/{invoice.pk}/pay/intent/").json()
    assert (body["amount"], body["currency"], body["amount_minor"]) == ("120.50", "USD", 12050)
    assert body["client_secret"] not in portal.get(f"/invoices/{invoice.pk}/pay/").content.decode()
    # What Stripe.js confirmPayment does with the wallet's card (localstripe wants it set first).
    client = api(localstripe)
    method = client.v1.payment_methods.create(
        params={"type": "card", "card": {"number": VISA, "exp_month": 12, "exp_year": 2030, "cvc": "123"}}
    )
    client.v1.payment_intents.update(body["payment_intent"], params={"payment_method": method.id})
    assert client.v1.payment_intents.confirm(body["payment_intent"]).status == "succeeded"
    deliver("payment_intent.succeeded", body["payment_intent"])
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_paid) == (Invoice.Status.PAID, Decimal("120.50"))


# --- Saved payment methods ----------------------------------------------------------------------


def add_card(portal: Client, browser: Browser, number: str) -> dict[str, Any]:
    setup = portal.post("/payment-methods/setup/").json()
    assert setup["client_secret"].startswith(setup["setup_intent"] + "_secret_")
    confirmed = browser.confirm_card_setup(setup["client_secret"], number)
    assert confirmed.status_code == 200 and confirmed.json()["status"] == "succeeded", confirmed.text
    response = portal.post("/payment-methods/setup/finish/", {"setup_intent": setup["setup_intent"]})
    assert response.status_code == 200, response.content
    return dict(response.json())


def test_a_card_saved_with_a_setup_intent_becomes_the_default_and_is_detached_on_removal(
    portal: Client, organization: Organization, browser: Browser, localstripe: LocalStripe
) -> None:
    page = portal.get("/payment-methods/").content.decode()
    assert 'id="setup-card-element"' in page and 'id="save-card-button"' in page
    assert f'data-publishable-key="{PUBLISHABLE_KEY}"' in page and SECRET_KEY not in page

    first = add_card(portal, browser, VISA)
    visa = PaymentMethod.objects.get(pk=first["payment_method"])
    assert (visa.organization, visa.gateway, visa.kind, visa.brand, visa.last4) == (
        organization,
        "stripe",
        "card",
        "visa",
        "4242",
    )
    assert (visa.exp_month, visa.exp_year, visa.is_default, visa.is_fallback) == (12, 2030, True, False)
    assert visa.gateway_reference.startswith("pm_") and visa.customer_reference.startswith("cus_")
    client = api(localstripe)
    assert client.v1.payment_methods.retrieve(visa.gateway_reference).customer == visa.customer_reference
    # The card's fingerprint, which a hard decline of the same card on the pay page is matched by.
    assert (
        visa.fingerprint
        and visa.fingerprint == client.v1.payment_methods.retrieve(visa.gateway_reference).card.fingerprint
    )

    second = add_card(portal, browser, MASTERCARD)
    mastercard = PaymentMethod.objects.get(pk=second["payment_method"])
    assert (mastercard.last4, mastercard.is_default, mastercard.customer_reference) == (
        "4444",
        False,
        visa.customer_reference,
    )

    assert portal.post(f"/payment-methods/{mastercard.pk}/fallback/").status_code == 302
    mastercard.refresh_from_db()
    assert mastercard.is_fallback
    page = portal.get("/payment-methods/").content.decode()
    assert "is now the fallback payment method" in page and "Fallback" in page

    portal.post(f"/payment-methods/{mastercard.pk}/default/")
    visa.refresh_from_db()
    mastercard.refresh_from_db()
    assert (mastercard.is_default, mastercard.is_fallback, visa.is_default, visa.is_fallback) == (
        True,
        False,
        False,
        False,
    )

    portal.post(f"/payment-methods/{visa.pk}/remove/")
    assert not PaymentMethod.objects.filter(pk=visa.pk).exists()
    assert client.v1.payment_methods.retrieve(visa.gateway_reference).customer is None


def test_the_default_cannot_also_be_the_fallback(portal: Client, browser: Browser) -> None:
    method = PaymentMethod.objects.get(pk=add_card(portal, browser, VISA)["payment_method"])
    response = portal.post(f"/payment-methods/{method.pk}/fallback/", follow=True)
    assert "make another method the default first" in response.content.decode()
    method.refresh_from_db()
    assert (method.is_default, method.is_fallback) == (True, False)


def test_a_method_a_top_up_rule_charges_first_is_not_removed(
    portal: Client, organization: Organization, browser: Browser, localstripe: LocalStripe
) -> None:
    method = PaymentMethod.objects.get(pk=add_card(portal, browser, VISA)["payment_method"])
    TopUpRuleFactory(organization=organization, primary_method=method)
    response = portal.post(f"/payment-methods/{method.pk}/remove/", follow=True)
    assert "choose another primary payment method" in response.content.decode()
    assert PaymentMethod.objects.filter(pk=method.pk).exists()
    assert api(localstripe).v1.payment_methods.retrieve(method.gateway_reference).customer == method.customer_reference


def test_a_setup_intent_of_another_organization_is_not_stored(portal: Client, browser: Browser) -> None:
    other = OrganizationFactory()
    stranger = Client()
    stranger.force_login(MembershipFactory(organization=other, role="owner").user)
    setup = stranger.post("/payment-methods/setup/").json()
    assert browser.confirm_card_setup(setup["client_secret"], VISA).status_code == 200
    response = portal.post("/payment-methods/setup/finish/", {"setup_intent": setup["setup_intent"]})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "setup_invalid"
    assert not PaymentMethod.objects.exists()


def test_a_viewer_sees_saved_methods_but_cannot_change_them(
    viewer: User, organization: Organization, portal: Client, browser: Browser
) -> None:
    method = PaymentMethod.objects.get(pk=add_card(portal, browser, VISA)["payment_method"])
    client = Client()
    client.force_login(viewer)
    page = client.get("/payment-methods/").content.decode()
    assert "Visa •••• 4242" in page
    assert 'id="setup-card-element"' not in page and f'id="remove-{method.pk}"' not in page
    for url in (
        "/payment-methods/setup/",
        "/payment-methods/setup/finish/",
        f"/payment-methods/{method.pk}/default/",
        f"/payment-methods/{method.pk}/fallback/",
        f"/payment-methods/{method.pk}/remove/",
    ):
        assert client.post(url, {"setup_intent": "seti_x"}).status_code == 403, url
    assert PaymentMethod.objects.filter(pk=method.pk).exists()


def test_credit_notes_and_earlier_payments_lower_what_the_card_is_charged(
    portal: Client, organization: Organization, browser: Browser, localstripe: LocalStripe
) -> None:
    invoice = InvoiceFactory(organization=organization, total=Decimal("120.50"), amount_due=Decimal("120.50"),
                             amount_credited=Decimal("20.50"), amount_paid=Decimal("30.00"),
                             status=Invoice.Status.PARTIALLY_PAID)  # fmt: skip
    page = portal.get(f"/invoices/{invoice.pk}/pay/").content.decode()
    assert 'id="pay-amount">70.00 USD<' in page and 'data-amount-minor="7000"' in page
    body = portal.post(f"/invoices/{invoice.pk}/pay/confirm/", {"token": browser.create_token(VISA)}).json()
    assert api(localstripe).v1.payment_intents.retrieve(body["payment_intent"]).amount == 7000

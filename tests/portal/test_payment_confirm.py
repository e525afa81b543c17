"""The page behind the link emailed when an off-session charge needs 3-D Secure
(``/payments/confirm/<payment_intent>/``): who sees it, what it says, who gets the client secret,
and, over real HTTP against localstripe, an automatic top-up confirmed from the emailed link and
credited once by Stripe's webhook.

The browser's part (localstripe's Stripe.js stand-in: ``confirmCardPayment`` opens the 3-D Secure
dialog, then POSTs ``_authenticate`` with the publishable key) is replayed with the same request.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
import stripe
from django.core import mail
from django.test import Client

from aggregator.tenancy.models import AuditEvent, Organization, Role, User
from billing.invoicing.models import Invoice
from billing.ledger.models import LedgerTransaction
from billing.ledger.services import credit_purchase_record
from billing.payments.models import PaymentMethod
from billing.payments.records import Payment
from billing.topups.models import TopUp
from billing.topups.services import top_up_charge, top_up_rules_evaluate
from providers.models import VendorAccount
from tests.billing import localstripe as localstripe_fixtures
from tests.billing.localstripe import (
    PUBLISHABLE_KEY,
    SECRET_KEY,
    WEBHOOK_SECRET,
    LocalStripe,
    event_deliverer,
    stripe_settings_for,
)
from tests.factories import (
    InvoiceFactory,
    MembershipFactory,
    TopUpRuleFactory,
    VendorAccountFactory,
)

localstripe_server = localstripe_fixtures.localstripe_server
localstripe = localstripe_fixtures.localstripe

ALWAYS_AUTHENTICATE = "4000002760003184"  # localstripe leaves an off-session charge in requires_action
TODAY = date(2026, 11, 20)


@pytest.fixture(autouse=True)
def stripe_settings(settings: Any, localstripe: LocalStripe) -> None:
    stripe_settings_for(settings, localstripe)


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def portal(owner: User) -> Client:
    return signed_in(owner)


@pytest.fixture
def api(localstripe: LocalStripe) -> stripe.StripeClient:
    return stripe.StripeClient(SECRET_KEY, base_addresses={"api": localstripe.url}, max_network_retries=0)


@pytest.fixture
def account(organization: Organization) -> VendorAccount:
    return VendorAccountFactory(organization=organization, vendor="openai", label="OpenAI prod")


@pytest.fixture
def deliver(client: Client, django_capture_on_commit_callbacks: Any, localstripe: LocalStripe) -> Any:
    """Deliver localstripe's event about ``intent`` to the webhook, signed as Stripe signs it."""
    return event_deliverer(client=client, capture=django_capture_on_commit_callbacks, server=localstripe)


def authenticate(localstripe: LocalStripe, client_secret: str, *, success: bool = True) -> dict[str, Any]:
    """What localstripe's ``confirmCardPayment`` sends once the 3-D Secure dialog is answered."""
    intent = client_secret.split("_secret_")[0]
    response = httpx.post(
        f"{localstripe.url}/v1/payment_intents/{intent}/_authenticate?success={str(success).lower()}",
        content=json.dumps({"key": PUBLISHABLE_KEY, "client_secret": client_secret}),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def top_up_needing_authentication(
    account: VendorAccount, api: stripe.StripeClient, capture: Any, number: str = ALWAYS_AUTHENTICATE
) -> TopUp:
    """An automatic top-up of ``account`` (500.00 USD) whose off-session charge the bank wants
    confirmed: the customer was emailed the link."""
    customer = api.v1.customers.create(params={"email": "billing@acme.test"})
    method = api.v1.payment_methods.create(
        params={"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"}}
    )
    api.v1.payment_methods.attach(method.id, params={"customer": customer.id})
    saved = PaymentMethod.objects.create(organization=account.organization, gateway="stripe", kind="card",
                                         gateway_reference=method.id, customer_reference=customer.id, brand="visa",
                                         last4=number[-4:], exp_month=12, exp_year=2030)  # fmt: skip
    TopUpRuleFactory(organization=account.organization, vendor_account=account, primary_method=saved)
    credit_purchase_record(vendor_account=account, amount=Decimal("80.00"), currency="USD", kind="purchase",
                           effective_at=datetime(2026, 11, 1, tzinfo=UTC))  # fmt: skip
    (top_up,) = top_up_rules_evaluate(vendor_account=account, today=TODAY)
    with capture(execute=True):
        top_up = top_up_charge(top_up_id=top_up.pk)
    assert (top_up.status, top_up.last_decline_code) == ("action_required", "authentication_required")
    return top_up


def invoice_needing_authentication(organization: Organization, reference: str = "pi_FAKE_dunning_1") -> Payment:
    """A dunning retry of an invoice that the bank wants confirmed (as the dunning service records it)."""
    invoice = InvoiceFactory(organization=organization, number="INV-2026-000042", total=Decimal("120.50"),
                             amount_due=Decimal("120.50"))  # fmt: skip
    return Payment.objects.create(
        organization=organization, invoice=invoice, attempt=2, gateway="stripe", gateway_reference=reference,
        idempotency_key=f"invoice:{invoice.pk}:attempt:2", amount=Decimal("120.50"), currency="USD",
        status=Payment.Status.REQUIRES_PAYMENT, failure_code="authentication_required",
    )  # fmt: skip


def page_of(client: Client, reference: str) -> Any:
    return client.get(f"/payments/confirm/{reference}/")


# --- Who sees what ------------------------------------------------------------------------------


def test_the_gateway_builds_the_address_of_the_confirmation_page(settings: Any) -> None:
    from django.urls import reverse

    from billing.payments.gateways.stripe import StripeGateway

    settings.SITE_URL = "https://billing.example.test/"
    url = StripeGateway()._confirm_url("pi_FAKE_123")
    assert url == "https://billing.example.test" + reverse("portal:payment-confirm", args=["pi_FAKE_123"])
    assert url == "https://billing.example.test/payments/confirm/pi_FAKE_123/"


def test_a_top_up_waiting_for_authentication_shows_its_purpose_amount_and_button(
    portal: Client, account: VendorAccount, api: stripe.StripeClient, localstripe: LocalStripe,
    django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    top_up = top_up_needing_authentication(account, api, django_capture_on_commit_callbacks)
    response = page_of(portal, top_up.gateway_reference)
    assert response.status_code == 200
    page = response.content.decode()
    assert '<p id="confirm-purpose">Automatic top-up of OpenAI prod</p>' in page
    assert '<p class="figure" id="confirm-amount">500.00 USD</p>' in page
    assert 'data-state="open"' in page
    assert 'id="confirm-button" disabled>Confirm 500.00 USD</button>' in page
    assert f'<script src="{localstripe.url}/js.stripe.com/v3/"></script>' in page
    assert "_secret_" not in page  # the client secret is fetched, never rendered
    assert "<script>" not in page  # no inline script


def test_an_invoice_retry_waiting_for_authentication_names_the_invoice(
    portal: Client, organization: Organization
) -> None:
    payment = invoice_needing_authentication(organization)
    page = page_of(portal, payment.gateway_reference).content.decode()
    assert f'href="/invoices/{payment.invoice_id}/">Invoice INV-2026-000042</a>' in page
    assert '<p class="figure" id="confirm-amount">120.50 USD</p>' in page
    assert "Confirm 120.50 USD" in page


def test_another_organizations_payment_or_an_unknown_one_is_a_404(
    portal: Client, organization: Organization, other_organization: Organization
) -> None:
    payment = invoice_needing_authentication(organization)
    outsider = MembershipFactory(organization=other_organization, role=Role.OWNER, user__email="o@globex.test").user
    client = signed_in(outsider)
    reference = payment.gateway_reference
    assert page_of(client, reference).status_code == 404
    assert client.post(f"/payments/confirm/{reference}/intent/").status_code == 404
    assert client.get(f"/payments/confirm/{reference}/status/").status_code == 404
    assert page_of(portal, "pi_FAKE_unknown").status_code == 404
    assert page_of(portal, reference).status_code == 200


def test_the_link_asks_to_sign_in_first(client: Client, organization: Organization) -> None:
    payment = invoice_needing_authentication(organization)
    response = page_of(client, payment.gateway_reference)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=/payments/confirm/")


def test_a_viewer_sees_the_payment_but_cannot_confirm_it(organization: Organization, viewer: User) -> None:
    payment = invoice_needing_authentication(organization)
    client = signed_in(viewer)
    page = page_of(client, payment.gateway_reference).content.decode()
    assert "120.50 USD" in page
    assert 'id="confirm-not-allowed"' in page
    assert 'id="confirm-button"' not in page and "data-intent-url" not in page
    response = client.post(f"/payments/confirm/{payment.gateway_reference}/intent/")
    assert response.status_code == 403
    assert "_secret_" not in response.content.decode()


def test_the_intent_endpoint_gives_the_client_secret_to_a_billing_admin_only(
    organization: Organization, account: VendorAccount, api: stripe.StripeClient, viewer: User,
    django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    top_up = top_up_needing_authentication(account, api, django_capture_on_commit_callbacks)
    url = f"/payments/confirm/{top_up.gateway_reference}/intent/"
    assert signed_in(viewer).post(url).status_code == 403
    admin = MembershipFactory(organization=organization, role=Role.BILLING_ADMIN, user__email="a@acme.test").user
    response = signed_in(admin).post(url)
    assert response.status_code == 200, response.content
    assert "no-store" in response["Cache-Control"]
    body = response.json()
    intent = api.v1.payment_intents.retrieve(top_up.gateway_reference)
    assert body == {"state": "open", "payment_intent": intent.id, "status": "requires_action",
                    "client_secret": intent.client_secret,
                    "payment_method": top_up.attempts.get().payment_method_reference}  # fmt: skip
    audit = AuditEvent.objects.get(action="payment.confirm")
    assert (audit.actor, audit.after) == (admin, {"payment_intent": intent.id, "channel": "portal"})
    assert intent.client_secret not in json.dumps(audit.after)


def test_a_payment_already_succeeded_says_so_without_a_button(portal: Client, organization: Organization) -> None:
    payment = invoice_needing_authentication(organization)
    Payment.objects.filter(pk=payment.pk).update(status=Payment.Status.SUCCEEDED)
    Invoice.objects.filter(pk=payment.invoice_id).update(status=Invoice.Status.PAID)
    page = page_of(portal, payment.gateway_reference).content.decode()
    assert 'data-state="succeeded"' in page and "Paid. Thank you!" in page
    assert 'id="confirm-button"' not in page and "js.stripe.com" not in page
    response = portal.post(f"/payments/confirm/{payment.gateway_reference}/intent/")
    assert (response.status_code, response.json()) == (409, {"state": "succeeded", "message": "Paid. Thank you!"})
    status = portal.get(f"/payments/confirm/{payment.gateway_reference}/status/").json()
    assert status == {"state": "succeeded", "message": "Paid. Thank you!"}


def test_an_invoice_paid_another_way_cannot_be_confirmed(portal: Client, organization: Organization) -> None:
    payment = invoice_needing_authentication(organization)
    Invoice.objects.filter(pk=payment.invoice_id).update(status=Invoice.Status.PAID)
    page = page_of(portal, payment.gateway_reference).content.decode()
    assert 'data-state="closed"' in page
    assert "This invoice is already paid: there is nothing to confirm." in page
    assert 'id="confirm-button"' not in page


def test_an_expired_top_up_link_says_why(
    portal: Client, account: VendorAccount, api: stripe.StripeClient, django_capture_on_commit_callbacks: Any
) -> None:
    top_up = top_up_needing_authentication(account, api, django_capture_on_commit_callbacks)
    TopUp.objects.filter(pk=top_up.pk).update(status=TopUp.Status.CANCELED,
                                              last_error="The payment was not confirmed within 7 days.")  # fmt: skip
    page = page_of(portal, top_up.gateway_reference).content.decode()
    assert 'data-state="closed"' in page and "The payment was not confirmed within 7 days." in page
    assert 'id="confirm-button"' not in page


# --- End to end over HTTP, against localstripe --------------------------------------------------


def test_the_emailed_link_confirms_the_top_up_and_the_webhook_credits_it_once(
    portal: Client, account: VendorAccount, api: stripe.StripeClient, localstripe: LocalStripe, deliver: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    top_up = top_up_needing_authentication(account, api, django_capture_on_commit_callbacks)
    (email,) = mail.outbox
    assert email.subject == "Confirm the automatic top-up of OpenAI prod (openai)"
    assert top_up.action_url in email.body
    path = urlparse(top_up.action_url).path
    assert path == f"/payments/confirm/{top_up.gateway_reference}/"
    assert portal.get(path).status_code == 200

    secret = portal.post(f"{path}intent/").json()["client_secret"]
    intent = authenticate(localstripe, secret)  # the customer completes 3-D Secure
    assert intent["status"] == "succeeded"
    top_up.refresh_from_db()
    assert top_up.status == "action_required"  # the browser's word credits nothing
    assert portal.get(f"{path}status/").json()["state"] == "open"
    assert not LedgerTransaction.objects.filter(kind="vendor_topup").exists()

    deliver("payment_intent.succeeded", top_up.gateway_reference)
    deliver("payment_intent.succeeded", top_up.gateway_reference)  # delivered twice: credited once
    top_up.refresh_from_db()
    assert (top_up.status, top_up.action_url) == ("succeeded", "")
    (credit,) = LedgerTransaction.objects.filter(kind="vendor_topup")
    assert credit.entries.get(amount__gt=0).amount == Decimal("500.00")
    payment = Payment.objects.get(top_up=top_up)
    assert (payment.status, payment.amount, payment.gateway_reference) == (
        "succeeded", Decimal("500.00"), top_up.gateway_reference)  # fmt: skip
    assert portal.get(f"{path}status/").json() == {
        "state": "succeeded", "message": "Confirmed. Thank you! The top-up is credited."}  # fmt: skip
    page = portal.get(path).content.decode()
    assert 'data-state="succeeded"' in page and 'id="confirm-button"' not in page
    assert portal.post(f"{path}intent/").status_code == 409


def test_a_failed_authentication_leaves_the_top_up_waiting_and_nothing_credited(
    portal: Client, account: VendorAccount, api: stripe.StripeClient, localstripe: LocalStripe,
    django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    top_up = top_up_needing_authentication(account, api, django_capture_on_commit_callbacks)
    path = f"/payments/confirm/{top_up.gateway_reference}/"
    secret = portal.post(f"{path}intent/").json()["client_secret"]
    intent = authenticate(localstripe, secret, success=False)
    assert intent["status"] == "requires_payment_method"
    top_up.refresh_from_db()
    assert top_up.status == "action_required"
    assert not LedgerTransaction.objects.filter(kind="vendor_topup").exists()
    assert portal.get(f"{path}status/").json()["state"] == "open"


def test_stripes_authentication_required_failure_event_does_not_retry_the_waiting_top_up(
    portal: Client, account: VendorAccount, api: stripe.StripeClient, localstripe: LocalStripe,
    django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    """Real Stripe also sends ``payment_intent.payment_failed`` (code ``authentication_required``)
    for an off-session charge needing 3-D Secure; localstripe does not, so it is built here."""
    top_up = top_up_needing_authentication(account, api, django_capture_on_commit_callbacks)
    attempts = top_up.attempts.count()
    intent = api.v1.payment_intents.retrieve(top_up.gateway_reference).to_dict()
    intent.update(status="requires_payment_method",
                  last_payment_error={"code": "authentication_required", "type": "card_error"})  # fmt: skip
    event = {"id": "evt_FAKE_auth_required", "object": "event", "type": "payment_intent.payment_failed",
             "created": 1764300000, "data": {"object": intent}}  # fmt: skip
    raw = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(raw, WEBHOOK_SECRET)
    with django_capture_on_commit_callbacks(execute=True):
        response = portal.post(
            "/webhooks/stripe/", data=raw, content_type="application/json", HTTP_STRIPE_SIGNATURE=header
        )
    assert response.status_code == 200
    top_up.refresh_from_db()
    assert (top_up.status, top_up.attempts.count()) == ("action_required", attempts)  # no retry, no fallback
    assert len(mail.outbox) == 1  # only the first email with the link
    assert portal.get(f"/payments/confirm/{top_up.gateway_reference}/").status_code == 200
    secret = portal.post(f"/payments/confirm/{top_up.gateway_reference}/intent/").json()["client_secret"]
    assert authenticate(localstripe, secret)["status"] == "succeeded"  # still confirmable


def test_a_dunning_retry_needing_authentication_is_confirmed_from_its_link_and_pays_the_invoice(
    portal: Client, organization: Organization, api: stripe.StripeClient, localstripe: LocalStripe, deliver: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    from billing.payments.dunning import services as dunning
    from billing.payments.dunning.models import DunningCase

    invoice = InvoiceFactory(organization=organization, number="INV-2026-000077", total=Decimal("120.50"),
                             amount_due=Decimal("120.50"), due_date=date(2026, 11, 19))  # fmt: skip
    customer = api.v1.customers.create(params={"email": "billing@acme.test"})
    method = api.v1.payment_methods.create(params={"type": "card", "card": {
        "number": ALWAYS_AUTHENTICATE, "exp_month": 12, "exp_year": 2030, "cvc": "123"}})  # fmt: skip
    api.v1.payment_methods.attach(method.id, params={"customer": customer.id})
    PaymentMethod.objects.create(organization=organization, gateway="stripe", kind="card", is_default=True,
                                 gateway_reference=method.id, customer_reference=customer.id, brand="visa",
                                 last4="3184", exp_month=12, exp_year=2030)  # fmt: skip
    anchor = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    dunning.dunning_case_open(invoice_id=invoice.pk, trigger=DunningCase.Trigger.PAYMENT_FAILED, anchor_at=anchor)
    due = DunningCase.objects.get().next_step_at  # the first retry
    assert due is not None
    with django_capture_on_commit_callbacks(execute=True):
        dunning.dunning_run_due(now=due)
    payment = Payment.objects.get(invoice=invoice)
    assert (payment.status, payment.failure_code) == ("requires_payment", "authentication_required")
    path = f"/payments/confirm/{payment.gateway_reference}/"
    (email,) = mail.outbox
    assert path in email.body

    page = portal.get(path).content.decode()
    assert f'href="/invoices/{invoice.pk}/">Invoice INV-2026-000077</a>' in page
    assert "Confirm 120.50 USD" in page
    secret = portal.post(f"{path}intent/").json()["client_secret"]
    assert authenticate(localstripe, secret)["status"] == "succeeded"
    deliver("payment_intent.succeeded", payment.gateway_reference)
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_paid) == (Invoice.Status.PAID, Decimal("120.50"))
    assert portal.get(f"{path}status/").json() == {"state": "succeeded", "message": "Paid. Thank you!"}

"""Portal invoices: list, detail, PDF and the pay page, scoped to the member's organization, with
roles, the payment methods on offer, and a fixed number of queries per page whatever the volume."""

from __future__ import annotations

import json
import threading
from datetime import date
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils.html import escape

from aggregator.tenancy.models import Organization, Role, User
from billing.invoicing.models import Invoice, InvoiceLine
from billing.payments.gateways import FAKE_GATEWAY
from billing.payments.gateways.base import decline_message
from billing.payments.gateways.stripe import StripeGateway
from billing.payments.records import Payment
from tests.factories import CreditNoteFactory, InvoiceFactory, MembershipFactory, PaymentFactory

PUBLISHABLE_KEY = "pk_test_FAKE_portal_0000"
SECRET_KEY = "sk_test_FAKE_portal_0000"
WEBHOOK_SECRET = "whsec_FAKE_portal_0000"
JS_URL = "http://127.0.0.1:8420/js.stripe.com/v3/"
STRIPE_GATEWAY = "billing.payments.gateways.stripe.StripeGateway"


@pytest.fixture
def owner_portal(owner: User) -> Client:
    client = Client()
    client.force_login(owner)
    return client


@pytest.fixture
def viewer_portal(viewer: User) -> Client:
    client = Client()
    client.force_login(viewer)
    return client


@pytest.fixture
def stripe_configured(settings: Any) -> None:
    settings.STRIPE_SECRET_KEY = SECRET_KEY
    settings.STRIPE_PUBLISHABLE_KEY = PUBLISHABLE_KEY
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_JS_URL = JS_URL
    settings.PAYMENT_GATEWAYS = [FAKE_GATEWAY, STRIPE_GATEWAY]
    settings.PAYPAL_CLIENT_ID = ""


def finalized(organization: Organization, lines: list[tuple[str, str, str]], **fields: Any) -> Invoice:
    """An open invoice with ``(vendor label, description, amount)`` lines (written while a draft)."""
    number = fields.pop("number", None)
    invoice = InvoiceFactory(organization=organization, status=Invoice.Status.DRAFT, number=None, **fields)
    for position, (label, description, amount) in enumerate(lines):
        InvoiceLine.objects.create(
            invoice=invoice,
            vendor=label.lower(),
            vendor_label=label,
            description=description,
            amount=Decimal(amount),
            position=position,
        )
    Invoice.objects.filter(pk=invoice.pk).update(
        status=Invoice.Status.OPEN, number=number or f"INV-2026-{invoice.pk:06d}"
    )
    invoice.refresh_from_db()
    return invoice


def page(client: Client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, response.status_code
    return response.content.decode()


# --- List ---------------------------------------------------------------------------------------


def test_list_shows_the_organizations_invoices_and_credit_notes_only(
    owner_portal: Client, organization: Organization, other_organization: Organization
) -> None:
    october = InvoiceFactory(
        organization=organization,
        number="INV-2026-000101",
        total=Decimal("120.50"),
        amount_due=Decimal("120.50"),
        amount_paid=Decimal("20.50"),
        status=Invoice.Status.PARTIALLY_PAID,
    )
    InvoiceFactory(
        organization=organization,
        number=None,
        status=Invoice.Status.DRAFT,
        period_start=date(2026, 11, 1),
        period_end=date(2026, 11, 30),
    )
    InvoiceFactory(organization=other_organization, number="INV-2026-000999")
    CreditNoteFactory(invoice=october, number="CN-2026-000007", amount=Decimal("5.25"), reason="Restated usage")
    html = page(owner_portal, "/invoices/")
    assert "INV-2026-000101" in html
    assert "120.50 USD" in html and "100.00 USD" in html  # total, amount due
    assert "Partially paid" in html
    assert f'href="/invoices/{october.pk}/pay/"' in html
    assert "CN-2026-000007" in html and "5.25 USD" in html and "Restated usage" in html
    assert "INV-2026-000999" not in html
    assert "Draft" not in html


def test_list_reads_the_same_number_of_queries_for_few_and_many_invoices(
    owner_portal: Client, organization: Organization
) -> None:
    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            page(owner_portal, "/invoices/")
        return len(queries)

    for month in (1, 2):
        invoice = InvoiceFactory(
            organization=organization, period_start=date(2025, month, 1), period_end=date(2025, month, 28)
        )
    CreditNoteFactory(invoice=invoice)
    few = count()
    for month in range(3, 13):
        invoice = InvoiceFactory(
            organization=organization, period_start=date(2025, month, 1), period_end=date(2025, month, 28)
        )
        CreditNoteFactory(invoice=invoice)
    assert count() == few


# --- Detail -------------------------------------------------------------------------------------


def test_detail_groups_lines_by_vendor_with_subtotals_totals_and_payments(
    owner_portal: Client, organization: Organization
) -> None:
    invoice = finalized(
        organization,
        [
            ("OpenAI", "gpt-4o input tokens", "80.00"),
            ("OpenAI", "gpt-4o output tokens", "20.25"),
            ("Anthropic", "claude input tokens", "19.75"),
        ],
        subtotal=Decimal("120.00"),
        tax_total=Decimal("0"),
        total=Decimal("120.00"),
        amount_due=Decimal("120.00"),
        amount_paid=Decimal("50.00"),
    )
    PaymentFactory(invoice=invoice, amount=Decimal("50.00"), status=Payment.Status.SUCCEEDED)
    declined = decline_message("insufficient_funds")
    PaymentFactory(
        invoice=invoice,
        amount=Decimal("70.00"),
        status=Payment.Status.FAILED,
        failure_code="insufficient_funds",
        failure_message=declined,
    )
    PaymentFactory(
        invoice=invoice, amount=Decimal("30.00"), status=Payment.Status.REFUNDED, amount_refunded=Decimal("30.00")
    )
    PaymentFactory(
        invoice=invoice, amount=Decimal("40.00"), status=Payment.Status.DISPUTED, dispute_reason="fraudulent"
    )
    PaymentFactory(invoice=invoice, amount=Decimal("70.00"), status=Payment.Status.REQUIRES_PAYMENT)
    CreditNoteFactory(invoice=invoice, number="CN-2026-000042", amount=Decimal("3.00"))
    html = page(owner_portal, f"/invoices/{invoice.pk}/")
    assert html.index('data-vendor="OpenAI"') < html.index('data-vendor="Anthropic"')
    assert "Subtotal OpenAI" in html and "100.25" in html
    assert "Subtotal Anthropic" in html and "19.75" in html
    assert "120.00 USD" in html  # total
    assert "70.00 USD" in html  # left to pay
    assert escape(declined) in html
    assert "Refunded: 30.00 USD" in html
    assert "disputed this payment" in html and "fraudulent" in html
    assert html.count("data-payment=") == 4  # the attempt waiting for the customer is not a payment
    assert "CN-2026-000042" in html
    assert f'href="/invoices/{invoice.pk}/pdf/"' in html
    assert f'href="/invoices/{invoice.pk}/pay/"' in html


def test_detail_of_a_paid_invoice_has_no_pay_button(owner_portal: Client, organization: Organization) -> None:
    invoice = InvoiceFactory(organization=organization, status=Invoice.Status.PAID, amount_paid=Decimal("10.00"))
    html = page(owner_portal, f"/invoices/{invoice.pk}/")
    assert 'id="invoice-pay"' not in html
    assert "Paid" in html


def test_detail_reads_the_same_number_of_queries_for_few_and_many_lines_and_payments(
    owner_portal: Client, organization: Organization
) -> None:
    def count(invoice: Invoice) -> int:
        with CaptureQueriesContext(connection) as queries:
            page(owner_portal, f"/invoices/{invoice.pk}/")
        return len(queries)

    small = finalized(organization, [("OpenAI", "input", "1.00")])
    PaymentFactory(invoice=small, status=Payment.Status.SUCCEEDED)
    CreditNoteFactory(invoice=small)
    lines = [(vendor, f"model {i}", "1.00") for vendor in ("OpenAI", "Anthropic", "DeepSeek") for i in range(15)]
    large = finalized(
        organization,
        lines,
        period_start=date(2026, 9, 1),
        period_end=date(2026, 9, 30),
    )
    for _ in range(6):
        PaymentFactory(invoice=large, status=Payment.Status.FAILED, failure_message="declined")
        CreditNoteFactory(invoice=large)
    assert count(large) == count(small)


# --- PDF and scoping ----------------------------------------------------------------------------


def test_pdf_download_streams_the_stored_pdf(owner_portal: Client, organization: Organization) -> None:
    invoice = InvoiceFactory(organization=organization, number="INV-2026-000321")
    response = owner_portal.get(f"/invoices/{invoice.pk}/pdf/")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert 'filename="INV-2026-000321.pdf"' in response["Content-Disposition"]
    assert b"".join(response.streaming_content) == b"%PDF-1.7 factory"


def test_an_invoice_without_its_pdf_yet_is_a_404(owner_portal: Client, organization: Organization) -> None:
    invoice = InvoiceFactory(organization=organization, pdf="")
    assert owner_portal.get(f"/invoices/{invoice.pk}/pdf/").status_code == 404


@pytest.mark.parametrize("suffix", ["", "pdf/", "pay/", "pay/status/"])
def test_another_organizations_invoice_is_a_404(
    owner_portal: Client, other_organization: Organization, suffix: str
) -> None:
    theirs = InvoiceFactory(organization=other_organization)
    assert owner_portal.get(f"/invoices/{theirs.pk}/{suffix}").status_code == 404


@pytest.mark.parametrize("suffix", ["pay/intent/", "pay/confirm/"])
def test_paying_another_organizations_invoice_is_a_404(
    owner_portal: Client, other_organization: Organization, suffix: str, stripe_configured: None
) -> None:
    theirs = InvoiceFactory(organization=other_organization)
    assert owner_portal.post(f"/invoices/{theirs.pk}/{suffix}", {"token": "tok_x"}).status_code == 404
    assert not Payment.objects.exists()


def test_drafts_are_not_shown_to_customers(owner_portal: Client, organization: Organization) -> None:
    draft = InvoiceFactory(organization=organization, status=Invoice.Status.DRAFT, number=None)
    assert owner_portal.get(f"/invoices/{draft.pk}/").status_code == 404


def test_pages_need_a_signed_in_member(organization: Organization) -> None:
    invoice = InvoiceFactory(organization=organization)
    response = Client().get(f"/invoices/{invoice.pk}/pay/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


# --- Pay page -----------------------------------------------------------------------------------


def test_pay_page_loads_stripe_js_with_the_publishable_key_and_no_secret(
    owner_portal: Client, organization: Organization, stripe_configured: None
) -> None:
    invoice = InvoiceFactory(organization=organization, total=Decimal("120.50"), amount_due=Decimal("120.50"))
    html = page(owner_portal, f"/invoices/{invoice.pk}/pay/")
    assert f'<script src="{JS_URL}"></script>' in html
    assert '<script src="/static/portal/pay.js" defer></script>' in html
    assert f'data-publishable-key="{PUBLISHABLE_KEY}"' in html
    assert 'data-amount-minor="12050"' in html and 'data-currency="usd"' in html
    assert f'data-confirm-url="/invoices/{invoice.pk}/pay/confirm/"' in html
    for element in (
        'id="card-element"',
        'id="pay-button"',
        'id="payment-status"',
        'id="card-errors"',
        'id="express-checkout"',
    ):
        assert element in html
    assert "120.50 USD" in html
    assert SECRET_KEY not in html and WEBHOOK_SECRET not in html and "_secret_" not in html
    assert "<script>" not in html  # no inline script (CSP)
    assert not Payment.objects.exists()  # no PaymentIntent until the customer pays


def test_pay_page_offers_only_the_configured_methods(
    owner_portal: Client, organization: Organization, settings: Any
) -> None:
    invoice = InvoiceFactory(organization=organization)
    settings.STRIPE_SECRET_KEY = settings.STRIPE_PUBLISHABLE_KEY = settings.STRIPE_WEBHOOK_SECRET = ""
    settings.PAYPAL_CLIENT_ID = settings.PAYPAL_CLIENT_SECRET = settings.PAYPAL_WEBHOOK_ID = ""
    html = page(owner_portal, f"/invoices/{invoice.pk}/pay/")
    assert 'id="card-element"' not in html and 'id="express-checkout"' not in html
    assert 'id="paypal-method"' not in html and "js.stripe.com" not in html
    assert "Please pay by bank transfer" in html

    settings.PAYPAL_CLIENT_ID, settings.PAYPAL_CLIENT_SECRET, settings.PAYPAL_WEBHOOK_ID = "id", "FAKE", "WH-1"
    html = page(owner_portal, f"/invoices/{invoice.pk}/pay/")
    assert 'id="paypal-method"' in html
    assert 'id="card-element"' not in html and "bank transfer" not in html

    settings.STRIPE_SECRET_KEY, settings.STRIPE_PUBLISHABLE_KEY = SECRET_KEY, PUBLISHABLE_KEY
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.PAYPAL_CLIENT_ID = ""
    html = page(owner_portal, f"/invoices/{invoice.pk}/pay/")
    assert 'id="card-element"' in html and 'id="express-checkout"' in html
    assert 'id="paypal-method"' not in html


def test_a_hand_made_card_payment_is_refused_while_card_settings_are_missing(
    owner_portal: Client, organization: Organization, stripe_configured: None, settings: Any
) -> None:
    invoice = InvoiceFactory(organization=organization)
    settings.STRIPE_WEBHOOK_SECRET = ""  # payments could not be confirmed: the page hides cards
    for action in ("intent", "confirm"):
        response = owner_portal.post(f"/invoices/{invoice.pk}/pay/{action}/", {"token": "tok_visa"})
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "payments_unavailable"
    assert not Payment.objects.filter(invoice=invoice).exists()


def test_a_viewer_sees_the_amount_but_no_pay_form_and_cannot_pay(
    viewer_portal: Client, organization: Organization, stripe_configured: None
) -> None:
    invoice = InvoiceFactory(organization=organization)
    html = page(viewer_portal, f"/invoices/{invoice.pk}/pay/")
    assert "10.00 USD" in html
    assert 'id="card-element"' not in html and "data-publishable-key" not in html
    assert "Only owners and billing admins" in html
    assert 'id="invoice-pay"' not in page(viewer_portal, f"/invoices/{invoice.pk}/")
    for suffix in ("pay/intent/", "pay/confirm/"):
        assert viewer_portal.post(f"/invoices/{invoice.pk}/{suffix}", {"token": "tok_x"}).status_code == 403
    assert not Payment.objects.exists()


def test_a_billing_admin_may_pay(organization: Organization, stripe_configured: None) -> None:
    admin = MembershipFactory(organization=organization, role=Role.BILLING_ADMIN).user
    client = Client()
    client.force_login(admin)
    invoice = InvoiceFactory(organization=organization)
    assert 'id="pay-button"' in page(client, f"/invoices/{invoice.pk}/pay/")


def test_pay_page_of_a_paid_invoice_says_so(
    owner_portal: Client, organization: Organization, stripe_configured: None
) -> None:
    invoice = InvoiceFactory(organization=organization, status=Invoice.Status.PAID, amount_paid=Decimal("10.00"))
    html = page(owner_portal, f"/invoices/{invoice.pk}/pay/")
    assert 'data-state="paid"' in html and "Paid. Thank you!" in html
    assert 'id="card-element"' not in html


def test_pay_page_shows_a_payment_being_confirmed(
    owner_portal: Client, organization: Organization, stripe_configured: None
) -> None:
    invoice = InvoiceFactory(organization=organization)
    PaymentFactory(invoice=invoice, status=Payment.Status.PROCESSING, amount=Decimal("10.00"))
    html = page(owner_portal, f"/invoices/{invoice.pk}/pay/")
    assert 'data-state="processing"' in html and "being confirmed" in html
    assert 'id="card-element"' not in html


def test_paying_a_void_invoice_is_refused(
    owner_portal: Client, organization: Organization, stripe_configured: None
) -> None:
    invoice = InvoiceFactory(organization=organization, status=Invoice.Status.VOID)
    assert "voided" in page(owner_portal, f"/invoices/{invoice.pk}/pay/")
    response = owner_portal.post(f"/invoices/{invoice.pk}/pay/intent/")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "invoice_not_payable"


def test_a_token_that_is_not_one_is_refused_before_stripe_is_called(
    owner_portal: Client, organization: Organization, stripe_configured: None
) -> None:
    invoice = InvoiceFactory(organization=organization)
    response = owner_portal.post(f"/invoices/{invoice.pk}/pay/confirm/", {"token": "4242424242424242"})
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "invalid_token",
        "message": "The card was not read correctly: reload the page and try again.",
    }
    assert not Payment.objects.exists()


def test_status_reports_the_invoice_and_its_latest_payment(owner_portal: Client, organization: Organization) -> None:
    invoice = InvoiceFactory(organization=organization, total=Decimal("80.00"), amount_due=Decimal("80.00"))
    PaymentFactory(
        invoice=invoice,
        gateway_reference="pi_failed",
        amount=Decimal("80.00"),
        status=Payment.Status.FAILED,
        failure_message=decline_message("expired_card"),
    )
    PaymentFactory(invoice=invoice, gateway_reference="pi_open", amount=Decimal("80.00"))
    body = owner_portal.get(f"/invoices/{invoice.pk}/pay/status/").json()
    assert (body["state"], body["invoice_status"], body["left"], body["currency"]) == ("open", "open", "80.00", "USD")
    assert body["payment"] == {"status": "failed", "amount": "80.00", "message": decline_message("expired_card")}
    mine = owner_portal.get(f"/invoices/{invoice.pk}/pay/status/?payment_intent=pi_open").json()
    assert mine["payment"] == {"status": "requires_payment", "amount": "80.00", "message": ""}


# --- Stripe's own API (localstripe cannot make a PaymentMethod of a token) ---------------------


class _StripeStub(BaseHTTPRequestHandler):
    """Answers the two calls the gateway makes to Stripe for a card token, in Stripe's shapes."""

    requests: ClassVar[list[tuple[str, dict[str, list[str]]]]] = []

    def do_POST(self) -> None:
        body = parse_qs(self.rfile.read(int(self.headers["Content-Length"] or 0)).decode())
        type(self).requests.append((self.path, body))
        if self.path == "/v1/payment_methods":
            answer: dict[str, Any] = {
                "id": "pm_from_token",
                "object": "payment_method",
                "type": "card",
                "card": {"brand": "visa", "last4": "3184"},
            }
        else:
            answer = {
                "id": "pi_real",
                "object": "payment_intent",
                "status": "requires_action",
                "amount": 12050,
                "currency": "usd",
                "client_secret": "pi_real_secret_abc",
                "next_action": {"type": "use_stripe_sdk"},
            }
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def test_on_stripe_the_token_becomes_a_payment_method_and_the_intent_is_confirmed_for_stripe_js(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StripeStub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        settings.STRIPE_SECRET_KEY, settings.STRIPE_MAX_NETWORK_RETRIES = SECRET_KEY, 0
        settings.STRIPE_API_BASE = f"http://127.0.0.1:{server.server_port}"
        monkeypatch.setattr(StripeGateway, "is_stripe", property(lambda self: True))
        intent = StripeGateway().payment_intent_confirm_token("pi_real", token="tok_visa")
    finally:
        server.shutdown()
    assert (intent.id, intent.status, intent.client_secret, intent.amount) == (
        "pi_real",
        "requires_action",
        "pi_real_secret_abc",
        Decimal("120.50"),
    )
    assert _StripeStub.requests == [
        ("/v1/payment_methods", {"type": ["card"], "card[token]": ["tok_visa"]}),
        ("/v1/payment_intents/pi_real/confirm", {"payment_method": ["pm_from_token"], "use_stripe_sdk": ["true"]}),
    ]

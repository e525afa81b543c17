"""PayPal payments over real HTTP against the local sandbox (``billing.payments.sandbox.paypal``),
through the official SDK (nothing mocked): the portal sends the buyer to PayPal's approval page,
the buyer clicks there, PayPal sends them back and we capture; declined funding sources,
double captures and duplicate invoice ids; webhooks signed with the sandbox's certificate,
verified, stored once and applied in any order.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from aggregator.tenancy.models import Organization, Role, User
from billing.invoicing.models import Invoice
from billing.payments import services
from billing.payments.dunning.models import DunningCase
from billing.payments.gateways.paypal import PayPalGateway
from billing.payments.records import Payment, WebhookEvent
from billing.payments.sandbox.paypal import PayPalSandbox
from tests.billing import paypal as paypal_fixtures
from tests.billing.paypal import Buyer
from tests.factories import InvoiceFactory, MembershipFactory

paypal_server = paypal_fixtures.paypal_server
paypal = paypal_fixtures.paypal
buyer = paypal_fixtures.buyer


@pytest.fixture
def invoice(organization: Organization) -> Invoice:
    return InvoiceFactory(organization=organization, number="INV-2026-000120", currency="USD",
                          total=Decimal("120.50"), amount_due=Decimal("120.50"))  # fmt: skip


@pytest.fixture
def portal(owner: User) -> Client:
    client = Client()
    client.force_login(owner)
    return client


@pytest.fixture
def deliver(client: Client, paypal: PayPalSandbox, django_capture_on_commit_callbacks: Any, db: Any) -> Any:
    """POST an event to the webhook as PayPal does (signed by the sandbox unless ``body`` and
    ``headers`` are given); the processing task runs when the view's transaction commits."""

    def send(event: dict[str, Any] | None = None, *, body: bytes | None = None,
             headers: dict[str, str] | None = None, **signing: Any) -> Any:  # fmt: skip
        if body is None:
            assert event is not None
            body, headers = paypal.signed(event, **signing)
        meta = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in (headers or {}).items() if k != "Content-Type"}
        with django_capture_on_commit_callbacks(execute=True):
            return client.post("/webhooks/paypal/", data=body, content_type="application/json", **meta)

    return send


def start(portal: Client, invoice: Invoice) -> Any:
    return portal.post(reverse("portal:invoice-paypal-start", args=[invoice.pk]))


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def order_of(paypal: PayPalSandbox, approve_url: str) -> dict[str, Any]:
    return paypal.orders[approve_url.rsplit("token=", 1)[1]]


def creates(paypal: PayPalSandbox) -> list[Any]:
    return [r for r in paypal.requests if r.method == "POST" and r.path == "/v2/checkout/orders"]


def paid_with_paypal(portal: Client, invoice: Invoice, buyer: Buyer) -> tuple[Payment, Any]:
    approve_url = start(portal, invoice)["Location"]
    return_path = buyer.click(approve_url)
    response = portal.get(return_path)
    return Payment.objects.filter(invoice=invoice).order_by("-attempt").first(), response  # type: ignore[return-value]


# --- Paying an invoice ----------------------------------------------------------------------------


def test_the_buyer_approves_at_paypal_and_the_return_captures_and_pays_the_invoice(
    portal: Client, invoice: Invoice, paypal: PayPalSandbox, buyer: Buyer
) -> None:
    response = start(portal, invoice)
    assert response.status_code == 302
    approve_url = response["Location"]
    assert approve_url.startswith(f"{paypal.base_url}/checkoutnow?token=")
    (create,) = creates(paypal)
    assert create.headers["paypal-request-id"] == f"invoice:{invoice.pk}:attempt:1"
    unit = create.json()["purchase_units"][0]
    assert create.json()["intent"] == "CAPTURE"
    assert (unit["amount"], unit["invoice_id"], unit["custom_id"]) == (
        {"currency_code": "USD", "value": "120.50"}, "INV-2026-000120", f"invoice:{invoice.pk}:attempt:1")  # fmt: skip
    context = create.json()["payment_source"]["paypal"]["experience_context"]
    return_url = f"http://testserver/invoices/{invoice.pk}/pay/paypal/return/"
    assert (context["return_url"], context["cancel_url"]) == (return_url, f"{return_url}?cancelled=1")
    payment = Payment.objects.get()
    assert (payment.gateway, payment.attempt, payment.status, payment.amount, payment.gateway_reference) == (
        "paypal", 1, "requires_payment", Decimal("120.50"), order_of(paypal, approve_url)["id"])  # fmt: skip

    assert "Approve" in buyer.page(approve_url).text
    return_path = buyer.click(approve_url)
    assert return_path.startswith(f"/invoices/{invoice.pk}/pay/paypal/return/?token={payment.gateway_reference}")
    back = portal.get(return_path)

    assert back.status_code == 302 and back["Location"] == reverse("portal:invoice-detail", args=[invoice.pk])
    assert messages_of(back) == ["Thank you: your PayPal payment was received."]
    invoice.refresh_from_db()
    payment.refresh_from_db()
    assert (invoice.status, invoice.amount_paid) == ("paid", Decimal("120.50"))
    capture = order_of(paypal, approve_url)["purchase_units"][0]["payments"]["captures"][0]
    assert (payment.status, payment.amount, payment.charge_reference, payment.payment_method_type) == (
        "succeeded", Decimal("120.50"), capture["id"], "paypal")  # fmt: skip
    assert payment.succeeded_at is not None


def test_a_double_click_on_pay_gives_the_same_order(portal: Client, invoice: Invoice, paypal: PayPalSandbox) -> None:
    first, second = start(portal, invoice)["Location"], start(portal, invoice)["Location"]
    assert first == second
    assert len(paypal.orders) == 1 and Payment.objects.count() == 1


def test_what_is_left_after_a_partial_payment_is_asked_for(
    portal: Client, invoice: Invoice, paypal: PayPalSandbox
) -> None:
    from billing.invoicing.services import invoice_payment_record

    invoice_payment_record(invoice_id=invoice.pk, amount=Decimal("20.50"))  # a bank transfer came in first
    approve_url = start(portal, invoice)["Location"]
    assert order_of(paypal, approve_url)["purchase_units"][0]["amount"] == {"currency_code": "USD", "value": "100.00"}


def test_a_declined_funding_source_sends_the_buyer_back_to_paypal(
    portal: Client, invoice: Invoice, paypal: PayPalSandbox, buyer: Buyer
) -> None:
    approve_url = start(portal, invoice)["Location"]
    back = portal.get(buyer.click(approve_url, "decline"))

    assert back.status_code == 302 and back["Location"] == approve_url  # the same order, approved again
    assert messages_of(back) == []
    assert "was declined" in buyer.page(approve_url).text  # PayPal's page says why they are back
    payment = Payment.objects.get()
    assert (payment.status, payment.failure_code, payment.succeeded_at) == (
        "requires_payment", "instrument_declined", None)  # fmt: skip
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_paid) == ("open", Decimal("0.00"))

    paid = portal.get(buyer.click(back["Location"]))  # another funding source this time
    assert paid["Location"] == reverse("portal:invoice-detail", args=[invoice.pk])
    payment.refresh_from_db()
    invoice.refresh_from_db()
    assert (payment.status, payment.failure_code, payment.failure_message) == ("succeeded", "", "")
    assert (invoice.status, invoice.amount_paid) == ("paid", Decimal("120.50"))
    assert len(paypal.orders) == 1


def test_coming_back_twice_records_the_payment_once(portal: Client, invoice: Invoice, buyer: Buyer) -> None:
    approve_url = start(portal, invoice)["Location"]
    return_path = buyer.click(approve_url)
    portal.get(return_path)
    again = portal.get(return_path)  # reload, or the back button

    assert messages_of(again)[-1] == "Thank you: your PayPal payment was received."
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_paid) == ("paid", Decimal("120.50"))


def test_an_order_captured_before_is_read_not_captured_again(
    portal: Client, invoice: Invoice, paypal: PayPalSandbox, buyer: Buyer
) -> None:
    approve_url = start(portal, invoice)["Location"]
    return_path = buyer.click(approve_url)
    order_id = order_of(paypal, approve_url)["id"]
    PayPalGateway().order_capture(order_id)  # captured at PayPal, but the answer never reached us

    back = portal.get(return_path)

    captures = [r for r in paypal.requests if r.path.endswith("/capture")]
    assert len(captures) == 2  # ours got ORDER_ALREADY_CAPTURED and read the order instead
    assert back["Location"] == reverse("portal:invoice-detail", args=[invoice.pk])
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_paid) == ("paid", Decimal("120.50"))
    payment = Payment.objects.get()
    assert (
        payment.charge_reference == order_of(paypal, approve_url)["purchase_units"][0]["payments"]["captures"][0]["id"]
    )


def test_a_capture_whose_answer_was_lost_is_recorded_on_the_next_pay(
    portal: Client, invoice: Invoice, paypal: PayPalSandbox, buyer: Buyer
) -> None:
    approve_url = start(portal, invoice)["Location"]
    buyer.click(approve_url)
    PayPalGateway().order_capture(order_of(paypal, approve_url)["id"])

    response = start(portal, invoice)

    assert response["Location"] == reverse("portal:invoice-detail", args=[invoice.pk])
    assert messages_of(response) == ["This invoice has nothing left to pay."]
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_paid) == ("paid", Decimal("120.50"))
    assert len(paypal.orders) == 1


def test_leaving_paypal_without_paying_charges_nothing_and_keeps_the_order(
    portal: Client, invoice: Invoice, paypal: PayPalSandbox, buyer: Buyer
) -> None:
    approve_url = start(portal, invoice)["Location"]
    back = portal.get(buyer.click(approve_url, "cancel"))
    assert messages_of(back) == ["You left PayPal without paying; nothing was charged."]
    assert Payment.objects.get().status == "requires_payment"
    assert start(portal, invoice)["Location"] == approve_url


def test_duplicate_invoice_id_for_a_payment_we_never_made_is_explained_and_the_next_try_carries_a_new_id(
    portal: Client, invoice: Invoice, paypal: PayPalSandbox
) -> None:
    # Someone already took a PayPal payment under this invoice number (outside this product).
    gateway = PayPalGateway()
    elsewhere = gateway.order_create(
        amount=Decimal("120.50"), currency="USD", request_id="elsewhere-1", invoice_id="INV-2026-000120",
        custom_id="", description="", return_url="http://example.test/", cancel_url="http://example.test/",
    )  # fmt: skip
    paypal.approve(elsewhere.id)
    gateway.order_capture(elsewhere.id)

    response = start(portal, invoice)

    assert response["Location"] == reverse("portal:invoice-detail", args=[invoice.pk])
    assert "PayPal already has a payment under this invoice number" in messages_of(response)[0]
    payment = Payment.objects.get()
    assert (payment.status, payment.failure_code, payment.gateway_reference) == ("failed", "duplicate_invoice_id", "")
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_paid) == ("open", Decimal("0.00"))

    again = start(portal, invoice)
    assert again["Location"].startswith(f"{paypal.base_url}/checkoutnow?token=")
    assert order_of(paypal, again["Location"])["purchase_units"][0]["invoice_id"] == "INV-2026-000120-2"
    assert creates(paypal)[-1].headers["paypal-request-id"] == f"invoice:{invoice.pk}:attempt:2"


def test_duplicate_invoice_id_at_capture_fails_the_attempt_and_charges_nothing(
    portal: Client, invoice: Invoice, paypal: PayPalSandbox, buyer: Buyer
) -> None:
    approve_url = start(portal, invoice)["Location"]
    return_path = buyer.click(approve_url)
    gateway = PayPalGateway()  # meanwhile a payment under the same invoice number completes elsewhere
    elsewhere = gateway.order_create(
        amount=Decimal("120.50"), currency="USD", request_id="elsewhere-2", invoice_id="INV-2026-000120",
        custom_id="", description="", return_url="http://example.test/", cancel_url="http://example.test/",
    )  # fmt: skip
    paypal.approve(elsewhere.id)
    gateway.order_capture(elsewhere.id)

    back = portal.get(return_path)

    assert back["Location"] == reverse("portal:invoice-detail", args=[invoice.pk])
    assert "PayPal already has a payment under this invoice number" in messages_of(back)[0]
    payment = Payment.objects.get()
    assert (payment.status, payment.failure_code, payment.charge_reference) == ("failed", "duplicate_invoice_id", "")
    assert order_of(paypal, approve_url)["status"] == "APPROVED"  # not captured
    invoice.refresh_from_db()
    assert invoice.amount_paid == Decimal("0.00")


def test_duplicate_invoice_id_finds_our_own_capture_we_had_given_up_on(
    portal: Client, invoice: Invoice, paypal: PayPalSandbox, buyer: Buyer
) -> None:
    approve_url = start(portal, invoice)["Location"]
    buyer.click(approve_url)
    PayPalGateway().order_capture(order_of(paypal, approve_url)["id"])  # the answer never reached us...
    Payment.objects.update(status=Payment.Status.FAILED, failure_code="expired")  # ...and we gave up on it

    response = start(portal, invoice)  # attempt 2: PayPal refuses the invoice number again

    assert messages_of(response) == ["This invoice has nothing left to pay."]
    first, second = Payment.objects.order_by("attempt")
    assert (first.status, first.amount, second.status, second.failure_code) == (
        "succeeded", Decimal("120.50"), "failed", "duplicate_invoice_id")  # fmt: skip
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_paid) == ("paid", Decimal("120.50"))


def test_a_viewer_cannot_pay_and_paypal_is_not_called(
    organization: Organization, invoice: Invoice, paypal: PayPalSandbox
) -> None:
    viewer = Client()
    viewer.force_login(MembershipFactory(organization=organization, role=Role.VIEWER).user)
    assert start(viewer, invoice).status_code == 403
    assert paypal.requests == [] and Payment.objects.count() == 0


def test_without_paypal_settings_the_customer_is_told_to_pay_another_way(
    portal: Client, invoice: Invoice, paypal: PayPalSandbox, settings: Any
) -> None:
    settings.PAYPAL_CLIENT_SECRET = ""
    response = start(portal, invoice)
    assert messages_of(response) == [
        "PayPal is not available right now; we have been notified. Pay by card or bank transfer instead."
    ]


def test_the_pay_page_shows_the_paypal_button_posting_to_the_start_url(
    portal: Client, invoice: Invoice, paypal: PayPalSandbox
) -> None:
    html = portal.get(reverse("portal:invoice-pay", args=[invoice.pk])).content.decode()
    assert f'action="{reverse("portal:invoice-paypal-start", args=[invoice.pk])}"' in html
    assert 'id="paypal-button"' in html


def test_the_return_page_without_an_order_says_there_is_nothing_to_finish(portal: Client, invoice: Invoice) -> None:
    response = portal.get(reverse("portal:invoice-paypal-return", args=[invoice.pk]))
    assert response.status_code == 200
    assert "There is no PayPal payment to finish here" in response.content.decode()


# --- Webhooks ---------------------------------------------------------------------------------


def test_a_verified_capture_event_is_stored_once_and_applied_once(
    portal: Client, invoice: Invoice, paypal: PayPalSandbox, buyer: Buyer, deliver: Any
) -> None:
    approve_url = start(portal, invoice)["Location"]
    buyer.click(approve_url)
    PayPalGateway().order_capture(order_of(paypal, approve_url)["id"])  # the buyer closed the tab before returning
    (event,) = paypal.events

    first, second = deliver(event), deliver(event)  # PayPal redelivers

    assert first.status_code == 200 and first.json() == {"received": True, "event": event["id"], "duplicate": False}
    assert second.status_code == 200 and second.json()["duplicate"] is True
    stored = WebhookEvent.objects.get()
    assert (stored.gateway, stored.type, stored.status) == ("paypal", "PAYMENT.CAPTURE.COMPLETED", "processed")
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_paid) == ("paid", Decimal("120.50"))
    payment = Payment.objects.get()
    assert (payment.status, payment.charge_reference) == ("succeeded", event["resource"]["id"])


def test_the_return_after_the_event_records_nothing_twice(
    portal: Client, invoice: Invoice, paypal: PayPalSandbox, buyer: Buyer, deliver: Any
) -> None:
    paid_with_paypal(portal, invoice, buyer)
    (event,) = paypal.events
    assert deliver(event).status_code == 200  # the event arrives after the return already recorded it
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_paid) == ("paid", Decimal("120.50"))
    assert WebhookEvent.objects.get().status == "processed"


def test_a_forged_signature_is_refused_and_changes_nothing(
    portal: Client, invoice: Invoice, paypal: PayPalSandbox, buyer: Buyer, deliver: Any
) -> None:
    approve_url = start(portal, invoice)["Location"]
    buyer.click(approve_url)
    PayPalGateway().order_capture(order_of(paypal, approve_url)["id"])
    (event,) = paypal.events
    body, headers = paypal.signed(event)
    tampered = json.loads(body)
    tampered["resource"]["amount"]["value"] = "1.00"

    forger = PayPalSandbox()  # another key, claiming the sandbox's certificate
    _, forged = forger.signed(event, cert_url=paypal.cert_url)
    responses = [
        deliver(body=json.dumps(tampered).encode(), headers=headers),
        deliver(body=body, headers=forged),
        deliver(body=body, headers={**headers, "PAYPAL-TRANSMISSION-SIG": "bm90IGEgc2lnbmF0dXJl"}),
        deliver(event, webhook_id="WH-ANOTHER-WEBHOOK"),
        deliver(body=body, headers={k: v for k, v in headers.items() if k != "PAYPAL-TRANSMISSION-SIG"}),
    ]

    assert [r.status_code for r in responses] == [400, 400, 400, 400, 400]
    assert responses[0].json()["error"]["code"] == "webhook_invalid"
    assert WebhookEvent.objects.count() == 0
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_paid) == ("open", Decimal("0.00"))


def test_a_stale_delivery_is_refused(paypal: PayPalSandbox, deliver: Any) -> None:
    event = paypal.event("PAYMENT.CAPTURE.COMPLETED", {"id": "CAPTURE1", "status": "COMPLETED"})
    old = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    response = deliver(event, transmission_time=old)
    assert response.status_code == 400 and "stale" in response.json()["error"]["message"]
    assert WebhookEvent.objects.count() == 0


@pytest.mark.parametrize(
    "cert_url",
    [
        "https://evil.example.com/v1/notifications/certs/CERT-1",
        "https://api.paypal.com.evil.example/v1/notifications/certs/CERT-1",
        "http://api.paypal.com/v1/notifications/certs/CERT-1",  # PayPal's host, but not over HTTPS
        "file:///etc/passwd",
    ],
)
def test_a_certificate_url_off_paypals_hosts_is_refused_without_fetching_it(
    paypal: PayPalSandbox, deliver: Any, cert_url: str
) -> None:
    event = paypal.event("PAYMENT.CAPTURE.COMPLETED", {"id": "CAPTURE1", "status": "COMPLETED"})
    response = deliver(event, cert_url=cert_url)
    assert response.status_code == 400 and "PayPal's hosts" in response.json()["error"]["message"]
    assert WebhookEvent.objects.count() == 0


def test_the_local_sandbox_host_is_refused_unless_allowed(paypal: PayPalSandbox, deliver: Any, settings: Any) -> None:
    settings.PAYPAL_WEBHOOK_CERT_HOSTS = []
    event = paypal.event("PAYMENT.CAPTURE.COMPLETED", {"id": "CAPTURE1", "status": "COMPLETED"})
    assert deliver(event).status_code == 400
    assert not any(r.path.startswith("/v1/notifications/certs/") for r in paypal.requests)


def test_without_a_webhook_id_deliveries_get_503_so_paypal_delivers_again(
    paypal: PayPalSandbox, deliver: Any, settings: Any
) -> None:
    settings.PAYPAL_WEBHOOK_ID = ""
    event = paypal.event("PAYMENT.CAPTURE.COMPLETED", {"id": "CAPTURE1", "status": "COMPLETED"})
    assert deliver(event).status_code == 503
    assert WebhookEvent.objects.count() == 0


def test_a_pending_capture_is_processing_until_paypal_completes_it(
    portal: Client, invoice: Invoice, paypal: PayPalSandbox, deliver: Any
) -> None:
    start(portal, invoice)
    payment = Payment.objects.get()
    resource = {"id": "3C679366HH908993F", "status": "PENDING", "amount": {"currency_code": "USD", "value": "120.50"},
                "status_details": {"reason": "PENDING_REVIEW"}, "custom_id": payment.idempotency_key,
                "supplementary_data": {"related_ids": {"order_id": payment.gateway_reference}}}  # fmt: skip
    deliver(paypal.event("PAYMENT.CAPTURE.PENDING", resource))
    payment.refresh_from_db()
    assert (payment.status, payment.charge_reference) == ("processing", "3C679366HH908993F")
    assert start(portal, invoice)["Location"] == reverse("portal:invoice-detail", args=[invoice.pk])  # in progress

    deliver(paypal.event("PAYMENT.CAPTURE.COMPLETED", {**resource, "status": "COMPLETED"}))
    payment.refresh_from_db()
    invoice.refresh_from_db()
    assert (payment.status, invoice.status, invoice.amount_paid) == ("succeeded", "paid", Decimal("120.50"))


def test_a_denied_capture_fails_the_payment_and_a_late_denial_changes_nothing(
    portal: Client, invoice: Invoice, paypal: PayPalSandbox, buyer: Buyer, deliver: Any
) -> None:
    start(portal, invoice)
    payment = Payment.objects.get()
    resource = {"id": "7NW873794T343360M", "status": "DECLINED", "amount": {"currency_code": "USD", "value": "120.50"},
                "supplementary_data": {"related_ids": {"order_id": payment.gateway_reference}}}  # fmt: skip
    deliver(paypal.event("PAYMENT.CAPTURE.DENIED", resource))
    payment.refresh_from_db()
    assert (payment.status, payment.failure_code) == ("failed", "capture_declined")
    invoice.refresh_from_db()
    assert invoice.amount_paid == Decimal("0.00")
    case = DunningCase.objects.get(invoice=invoice)  # the money did not move: collecting starts
    assert case.state == "active"

    paid, _ = paid_with_paypal(portal, invoice, buyer)  # a new attempt, a new order
    late = {**resource, "id": paid.charge_reference, "status": "DECLINED",
            "supplementary_data": {"related_ids": {"order_id": paid.gateway_reference}}}  # fmt: skip
    assert deliver(paypal.event("PAYMENT.CAPTURE.DECLINED", late)).status_code == 200
    paid.refresh_from_db()
    case.refresh_from_db()
    assert (paid.status, case.state) == ("succeeded", "recovered")
    assert WebhookEvent.objects.order_by("-id").first().status == "ignored"  # type: ignore[union-attr]


def test_refunds_and_disputes_are_recorded_on_the_payment(
    portal: Client, invoice: Invoice, paypal: PayPalSandbox, buyer: Buyer, deliver: Any
) -> None:
    payment, _ = paid_with_paypal(portal, invoice, buyer)

    services.payment_refund(payment_id=payment.pk, amount=Decimal("20.50"), reason="Duplicate vendor line")
    refunded = paypal.events[-1]
    assert refunded["event_type"] == "PAYMENT.CAPTURE.REFUNDED"
    deliver(refunded)  # PayPal's event about the refund we made: nothing is added twice
    payment.refresh_from_db()
    invoice.refresh_from_db()
    assert (payment.amount_refunded, payment.status) == (Decimal("20.50"), "succeeded")
    assert (invoice.amount_paid, invoice.amount_refunded, invoice.status) == (
        Decimal("120.50"), Decimal("20.50"), "partially_paid")  # fmt: skip

    dispute = {"dispute_id": "PP-D-27803", "reason": "MERCHANDISE_OR_SERVICE_NOT_RECEIVED", "status": "OPEN",
               "disputed_transactions": [{"seller_transaction_id": payment.charge_reference}],
               "dispute_amount": {"currency_code": "USD", "value": "100.00"}}  # fmt: skip
    deliver(paypal.event("CUSTOMER.DISPUTE.CREATED", dispute, resource_type="dispute"))
    payment.refresh_from_db()
    assert (payment.status, payment.dispute_reason) == ("disputed", "MERCHANDISE_OR_SERVICE_NOT_RECEIVED")
    assert payment.disputed_at is not None


@pytest.mark.parametrize(
    ("outcome", "taken", "status"),
    [("RESOLVED_BUYER_FAVOUR", "100.00", "partially_paid"), ("RESOLVED_SELLER_FAVOUR", "0", "paid")],
)
def test_a_dispute_resolved_for_the_buyer_leaves_that_much_owed_again(
    portal: Client, invoice: Invoice, paypal: PayPalSandbox, buyer: Buyer, deliver: Any,
    outcome: str, taken: str, status: str,
) -> None:  # fmt: skip
    payment, _ = paid_with_paypal(portal, invoice, buyer)
    dispute = {"dispute_id": "PP-D-27804", "reason": "MERCHANDISE_OR_SERVICE_NOT_RECEIVED", "status": "RESOLVED",
               "disputed_transactions": [{"seller_transaction_id": payment.charge_reference}],
               "dispute_amount": {"currency_code": "USD", "value": "100.00"},
               "dispute_outcome": {"outcome_code": outcome}}  # fmt: skip
    resolved = paypal.event("CUSTOMER.DISPUTE.RESOLVED", dispute, resource_type="dispute")
    deliver(resolved)
    deliver({**resolved, "id": "WH-FAKE-RESOLVED-AGAIN"})  # the same outcome told twice
    payment.refresh_from_db()
    assert (payment.status, payment.dispute_status, payment.amount_charged_back) == (
        "disputed", outcome, Decimal(taken))  # fmt: skip
    invoice.refresh_from_db()
    assert (invoice.amount_refunded, invoice.balance_due, invoice.status) == (Decimal(taken), Decimal(taken), status)


def test_an_event_about_someone_elses_capture_is_ignored(paypal: PayPalSandbox, deliver: Any, db: Any) -> None:
    resource = {"id": "NOTOURS", "status": "COMPLETED", "amount": {"currency_code": "USD", "value": "5.00"}}
    event = paypal.event("PAYMENT.CAPTURE.COMPLETED", resource)
    assert deliver(event).status_code == 200
    assert WebhookEvent.objects.get().status == "ignored"


# --- The offline demo -----------------------------------------------------------------------------


def test_the_demo_serves_the_sandbox_where_paypal_api_base_points_and_posts_webhooks_to_the_site(
    settings: Any,
) -> None:
    import socket

    from billing.payments.sandbox.paypal import demo_server

    settings.PAYPAL_CLIENT_ID, settings.PAYPAL_CLIENT_SECRET = "demo-id", "demo-FAKE-secret"
    settings.PAYPAL_API_BASE = "https://api-m.paypal.com"
    assert demo_server() is None  # PayPal's own API: nothing to serve

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.PAYPAL_API_BASE, settings.SITE_URL = f"http://127.0.0.1:{port}", "http://127.0.0.1:8000"
    server = demo_server()
    assert server is not None
    try:
        sandbox = server.vendor
        assert isinstance(sandbox, PayPalSandbox)
        assert server.url == f"http://127.0.0.1:{port}"
        assert (sandbox.client_id, sandbox.webhook_url) == ("demo-id", "http://127.0.0.1:8000/webhooks/paypal/")
        order = PayPalGateway().order_create(
            amount=Decimal("5.00"), currency="USD", request_id="demo-1", invoice_id="INV-DEMO-1", custom_id="",
            description="", return_url="http://127.0.0.1:8000/", cancel_url="http://127.0.0.1:8000/",
        )  # fmt: skip
        assert order.approve_url == f"http://127.0.0.1:{port}/checkoutnow?token={order.id}"
    finally:
        server.stop()


def test_a_paypal_payment_that_settles_the_invoice_closes_its_other_open_attempts(
    portal: Client, invoice: Invoice, buyer: Buyer, django_capture_on_commit_callbacks: Any
) -> None:
    other = Payment.objects.create(
        organization=invoice.organization, invoice=invoice, gateway="fake", gateway_reference="pi_fake_open_tab",
        amount=invoice.amount_due, currency="USD", idempotency_key=f"invoice:{invoice.pk}:attempt:5",
    )  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        payment, _response = paid_with_paypal(portal, invoice, buyer)
    assert callbacks  # the closing task, queued after the capture's commit
    assert payment.status == "succeeded"
    other.refresh_from_db()
    assert (other.status, other.failure_code) == ("failed", "canceled")


def test_a_capture_whose_outcome_never_came_is_read_from_paypal_and_applied_once(
    portal: Client, invoice: Invoice, paypal: PayPalSandbox, buyer: Buyer
) -> None:
    """Captured at PayPal (pending when we last heard), then neither the completion event nor the
    buyer's return reached us: the periodic reconciliation reads the order and pays the invoice."""
    from datetime import timedelta

    from django.utils import timezone

    from billing.payments.gateways import gateway_of_type
    from billing.payments.reconcile import paypal_payments_reconcile

    approve_url = start(portal, invoice)["Location"]
    buyer.click(approve_url)  # approved; the return never comes
    payment = Payment.objects.get()
    gateway_of_type("paypal", PayPalGateway).order_capture(payment.gateway_reference)
    Payment.objects.filter(pk=payment.pk).update(status=Payment.Status.PROCESSING)
    assert paypal_payments_reconcile(now=timezone.now()) == []  # not an hour yet: its event may still come
    Payment.objects.filter(pk=payment.pk).update(updated_at=timezone.now() - timedelta(hours=2))
    (applied,) = paypal_payments_reconcile(now=timezone.now())
    assert (applied.pk, applied.status, applied.amount) == (payment.pk, "succeeded", Decimal("120.50"))
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_paid) == ("paid", Decimal("120.50"))
    assert paypal_payments_reconcile(now=timezone.now() + timedelta(hours=2)) == []  # nothing processing now
    invoice.refresh_from_db()
    assert invoice.amount_paid == Decimal("120.50")

"""Paying an invoice with PayPal in headless Chromium: the pay page's PayPal button, the local PayPal
sandbox's approval page (a declined funding source first, then one that works), the return to the
invoice, and the sandbox's own signed webhook reaching the live server.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from aggregator.tenancy.models import Organization
from billing.invoicing.models import Invoice
from billing.payments.records import Payment, WebhookEvent
from billing.payments.sandbox.paypal import PayPalSandbox
from providers.sandbox.base import SandboxServer
from tests.billing import paypal as paypal_fixtures
from tests.e2e.browser import sign_in
from tests.factories import InvoiceFactory

pytestmark = pytest.mark.e2e

Shot = Callable[[str], Path]

paypal_server = paypal_fixtures.paypal_server
paypal = paypal_fixtures.paypal


@pytest.fixture
def paypal_live(paypal: PayPalSandbox, live_server: Any, settings: Any) -> Iterator[PayPalSandbox]:
    """The sandbox posting its signed webhooks to the live server, as PayPal would."""
    settings.SITE_URL = live_server.url
    paypal.webhook_url = f"{live_server.url}/webhooks/paypal/"
    yield paypal
    paypal.webhook_url = ""


def test_an_invoice_is_paid_with_paypal_after_a_declined_funding_source(
    page: Page, organization: Organization, paypal_live: PayPalSandbox, paypal_server: SandboxServer, shot: Shot
) -> None:
    invoice = InvoiceFactory(organization=organization, currency="USD", total=Decimal("120.50"),
                             amount_due=Decimal("120.50"))  # fmt: skip
    sign_in(page)
    page.goto(f"/invoices/{invoice.pk}/pay/")
    expect(page.locator("#pay-amount")).to_have_text("120.50 USD")
    expect(page.locator("#paypal-button")).to_be_visible()
    shot("pay-paypal")

    page.click("#paypal-button")
    expect(page).to_have_url(f"{paypal_server.url}/checkoutnow?token={Payment.objects.get().gateway_reference}")
    expect(page.locator("body")).to_contain_text("Pay 120.50 USD for Invoice")
    shot("paypal-approval")
    page.click("#approve-declined")  # PayPal declines this one at capture: back to PayPal to choose again

    expect(page).to_have_url(f"{paypal_server.url}/checkoutnow?token={Payment.objects.get().gateway_reference}")
    expect(page.locator("#declined")).to_contain_text("was declined")
    shot("paypal-approval-declined")
    page.click("#approve")

    expect(page.locator("#invoice-status")).to_have_text("Paid")
    expect(page.locator(".messages")).to_have_text("Thank you: your PayPal payment was received.")
    expect(page.locator("#left-to-pay")).to_have_text("0.00 USD")
    shot("invoice-paid-paypal")
    invoice.refresh_from_db()
    payment = Payment.objects.get()
    assert (invoice.status, invoice.amount_paid) == (Invoice.Status.PAID, Decimal("120.50"))
    assert (payment.gateway, payment.status, payment.amount) == ("paypal", "succeeded", Decimal("120.50"))

    # The sandbox's PAYMENT.CAPTURE.COMPLETED, signed with its certificate, reaches /webhooks/paypal/.
    deadline = time.monotonic() + 10
    while not paypal_live.deliveries and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [status for _, status in paypal_live.deliveries] == [200]
    event = WebhookEvent.objects.get(gateway="paypal")
    assert (event.type, event.status) == ("PAYMENT.CAPTURE.COMPLETED", WebhookEvent.Status.PROCESSED)
    invoice.refresh_from_db()
    assert invoice.amount_paid == Decimal("120.50")  # applied once

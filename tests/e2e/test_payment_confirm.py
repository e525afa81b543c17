"""The emailed link of an automatic top-up that needs 3-D Secure, followed in headless Chromium: the
confirmation page, localstripe's 3-D Secure dialog, and the top-up credited by the signed webhook
localstripe delivers to the live server.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import stripe
from django.core import mail
from playwright.sync_api import Page, expect

from aggregator.tenancy.models import Organization
from billing.ledger.models import LedgerTransaction
from billing.payments.localstripe import LocalStripe
from billing.topups.models import TopUp
from tests.billing.localstripe import SECRET_KEY
from tests.e2e.browser import sign_in
from tests.factories import VendorAccountFactory
from tests.portal.test_payment_confirm import ALWAYS_AUTHENTICATE, top_up_needing_authentication

pytestmark = pytest.mark.e2e

Shot = Callable[[str], Path]


def no_capture(**_kwargs: Any) -> Any:
    return nullcontext()  # the live server's database commits at once: emails go out at once


@pytest.mark.parametrize("complete", [True, False], ids=["completed", "failed"])
def test_the_emailed_link_confirms_a_top_up_with_3d_secure(
    page: Page, organization: Organization, stripe_live: LocalStripe, shot: Shot, complete: bool
) -> None:
    account = VendorAccountFactory(organization=organization, vendor="openai", label="OpenAI prod")
    api = stripe.StripeClient(SECRET_KEY, base_addresses={"api": stripe_live.url}, max_network_retries=0)
    top_up = top_up_needing_authentication(account, api, no_capture, ALWAYS_AUTHENTICATE)
    (email,) = mail.outbox
    assert top_up.action_url in email.body

    sign_in(page)
    page.goto(urlparse(top_up.action_url).path)
    expect(page.locator("#confirm-purpose")).to_have_text("Automatic top-up of OpenAI prod")
    expect(page.locator("#confirm-amount")).to_have_text("500.00 USD")
    button = page.locator("#confirm-button")
    expect(button).to_be_enabled()  # Stripe.js (localstripe's) loaded
    shot("confirm-payment")
    button.click()
    dialog = page.get_by_role("button", name="Complete authentication" if complete else "Fail authentication")
    expect(dialog).to_be_visible()
    shot("confirm-payment-3d-secure")
    dialog.click()
    status = page.locator("#payment-status")
    if not complete:
        expect(page.locator("#confirm-errors")).to_have_text(
            "Your bank did not confirm the payment (3-D Secure). Try again, or use another card."
        )
        expect(button).to_be_enabled()
        top_up.refresh_from_db()
        assert top_up.status == TopUp.Status.ACTION_REQUIRED
        assert not LedgerTransaction.objects.filter(kind="vendor_topup").exists()
        return

    # Credited once localstripe's signed payment_intent.succeeded reached /webhooks/stripe/.
    expect(status).to_have_attribute("data-state", "succeeded", timeout=20_000)
    expect(status).to_have_text("Confirmed. Thank you! The top-up is credited.")
    expect(button).to_be_hidden()
    shot("confirm-payment-done")
    top_up.refresh_from_db()
    assert (top_up.status, top_up.action_url) == (TopUp.Status.SUCCEEDED, "")
    (credit,) = LedgerTransaction.objects.filter(kind="vendor_topup")
    assert credit.entries.get(amount__gt=0).amount == Decimal("500.00")

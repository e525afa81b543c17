"""The portal at phone width and by keyboard alone: no page is wider than a phone's screen (wide
tables scroll inside their own box), the skip link comes first and moves focus to the page's
content, the main navigation is reached in order with Tab, and a credit purchase is recorded
without touching the mouse.

Screenshots: ``phone-<page>.png`` (``phone-<page>-ja.png`` in Japanese) for each page at 375×740,
in the folder the test report names.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import Page, ViewportSize, expect

from aggregator.tenancy.models import Organization
from billing.ledger.models import CreditPurchase
from billing.ledger.services import credit_purchase_record
from billing.payments.localstripe import LocalStripe
from providers.models import VendorAccount
from tests.billing.conftest import cost
from tests.e2e.browser import sign_in
from tests.e2e.test_portal import NAVIGATION, closed_invoice
from tests.factories import PaymentMethodFactory, VendorAccountFactory

pytestmark = pytest.mark.e2e

Shot = Callable[[str], Path]
PHONE: ViewportSize = {"width": 375, "height": 740}
# How far the document is wider than the window (0: no sideways scrolling of the page).
OVERFLOW = "() => document.documentElement.scrollWidth - window.innerWidth"
# The outermost elements that stick out past the window's right edge, for the failure message.
STICKING_OUT = """() => [...document.querySelectorAll("body *")]
    .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
    .filter(e => !e.parentElement.closest(".mainnav"))
    .map(e => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + (e.className ? "." + e.className : ""))
    .slice(0, 8)"""
# Shown form controls with no accessible name (no label, aria-label(ledby), title, or button
# text); the card fields are the payment provider's (Stripe.js mounts them in its own frame).
UNLABELLED = """() => [...document.querySelectorAll("input:not([type=hidden]), select, textarea, button")]
    .filter(e => e.getClientRects().length && !e.closest(".card-element"))
    .filter(e => !(e.labels && e.labels.length) && !e.getAttribute("aria-label") && !e.getAttribute("aria-labelledby")
                 && !e.title && !(e.tagName === "BUTTON" && e.textContent.trim())
                 && !(e.type === "submit" && e.value))
    .map(e => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + (e.name ? "[name=" + e.name + "]" : ""))"""
FOCUSED = "() => document.activeElement && (document.activeElement.id || document.activeElement.tagName)"


@pytest.mark.parametrize("language", ["en", "ja"])
def test_every_main_page_fits_a_phone_screen(
    page: Page, organization: Organization, stripe_live: LocalStripe, shot: Shot, language: str
) -> None:
    """Each page with data in its tables, in English and in Japanese: the document never scrolls
    sideways at 375 px."""
    invoice = closed_invoice(organization)  # also an OpenAI account with three days of costs
    account = VendorAccount.objects.get(organization=organization)
    today = timezone.now().date()
    for days in range(1, 4):
        cost(account, today - timedelta(days=days), "12.34")
    credit_purchase_record(
        vendor_account=account, amount=Decimal("5000.00"), currency="USD", kind="purchase",
        effective_at=timezone.now() - timedelta(days=10), note="Prepaid at OpenAI for the whole quarter",
    )  # fmt: skip
    PaymentMethodFactory(organization=organization, is_default=True)
    page.set_viewport_size(PHONE)
    sign_in(page)
    if language != "en":
        page.select_option("#lang-select", language)
        page.click("form.lang button[type=submit]")
        expect(page.locator("html")).to_have_attribute("lang", language)
    suffix = "" if language == "en" else f"-{language}"
    pages = [
        ("dashboard", "/"),
        ("vendor-accounts", "/vendor-accounts/"),
        ("vendor-account", f"/vendor-accounts/{account.pk}/"),
        ("vendor-account-link", "/vendor-accounts/link/?vendor=openai"),
        ("credits", "/credits/"),
        ("top-up-rule", "/credits/top-up-rules/new/"),
        ("usage", "/usage/"),
        ("invoices", "/invoices/"),
        ("invoice", f"/invoices/{invoice.pk}/"),
        ("pay", f"/invoices/{invoice.pk}/pay/"),
        ("payment-methods", "/payment-methods/"),
        ("team", "/team/"),
        ("billing-profile", "/billing-profile/"),
        ("security", "/security/"),
    ]
    overflowing, unlabelled = {}, {}
    for name, path in pages:
        page.goto(path)
        expect(page.locator("h1")).to_be_visible()
        if name == "pay":
            expect(page.locator("#pay-button")).to_be_enabled()  # the card Element is mounted
        assert page.evaluate("() => window.innerWidth") == PHONE["width"]
        shot(f"phone-{name}{suffix}")
        extra = page.evaluate(OVERFLOW)
        if extra > 1:
            overflowing[name] = (extra, page.evaluate(STICKING_OUT))
        if controls := page.evaluate(UNLABELLED):
            unlabelled[name] = controls
    assert overflowing == {}, f"pages wider than the phone's screen, by px: {overflowing}"
    assert unlabelled == {}, f"form controls without a label: {unlabelled}"


def test_the_skip_link_comes_first_and_moves_focus_to_the_content(page: Page, organization: Organization) -> None:
    sign_in(page)
    page.goto("/credits/")
    page.keyboard.press("Tab")
    skip = page.locator("a.skip")
    expect(skip).to_be_focused()
    expect(skip).to_be_visible()  # shown while focused
    page.keyboard.press("Enter")
    expect(page.locator("main#main")).to_be_focused()
    page.keyboard.press("Tab")  # and the next Tab goes on from the content, not the header
    assert page.evaluate("() => document.querySelector('main').contains(document.activeElement)")


def test_tab_reaches_every_link_of_the_navigation_in_order(page: Page, organization: Organization) -> None:
    sign_in(page)
    page.goto("/")
    page.keyboard.press("Tab")
    expect(page.locator("a.skip")).to_be_focused()
    reached = []
    for _ in range(30):
        page.keyboard.press("Tab")
        focused = page.evaluate(FOCUSED)
        if focused.startswith("nav-"):
            reached.append(f"#{focused}")
        if len(reached) == len(NAVIGATION):
            break
    assert reached == [link for link, _title, _name in NAVIGATION]
    page.keyboard.press("Enter")  # the last one, Security, opens with the keyboard
    expect(page.locator("h1")).to_have_text("Security")


def tab_to(page: Page, element_id: str, *, limit: int = 60) -> None:
    """Press Tab until the element ``element_id`` has the focus (fails after ``limit`` presses)."""
    for _ in range(limit):
        if page.evaluate(FOCUSED) == element_id:
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"#{element_id} was not reached with Tab (focus is on {page.evaluate(FOCUSED)!r})")


def test_a_credit_purchase_is_recorded_with_the_keyboard_alone(
    page: Page, organization: Organization, shot: Shot
) -> None:
    VendorAccountFactory(organization=organization, vendor="anthropic", label="Anthropic prod")
    account = VendorAccountFactory(organization=organization, vendor="openai", label="OpenAI prod")
    sign_in(page)
    page.goto(f"/credits/?account={account.pk}")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")  # the skip link
    expect(page.locator("main#main")).to_be_focused()
    tab_to(page, "id_vendor_account")
    expect(page.locator("#id_vendor_account")).to_have_value(str(account.pk))  # the account shown
    tab_to(page, "id_amount")
    page.keyboard.type("250.00")
    tab_to(page, "id_note")
    page.keyboard.type("Prepaid by keyboard")
    tab_to(page, "purchase-submit")
    shot("keyboard-purchase")
    page.keyboard.press("Enter")
    expect(page.locator(".messages")).to_contain_text("Recorded purchase of 250.00 USD for OpenAI prod.")
    expect(page.locator("#balance-amount")).to_have_text("250.00 USD")
    expect(page.locator("#purchases tbody tr")).to_contain_text("Prepaid by keyboard")
    (purchase,) = CreditPurchase.objects.filter(organization=organization)
    assert (purchase.vendor_account, purchase.amount, purchase.currency, purchase.kind, purchase.note) == (
        account, Decimal("250.00"), "USD", "purchase", "Prepaid by keyboard")  # fmt: skip

"""The customer portal walked in headless Chromium: sign in, link a vendor account and see it sync,
the dashboard's figures against the API's, credits and top-up rules, invoices (PDF, card payment
through localstripe's Stripe.js stand-in), and the portal in Japanese.

Screenshots of each main page go to the folder the test report names (tests/e2e/plugin.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from io import BytesIO
from pathlib import Path

import pytest
from django.utils import timezone, translation
from playwright.sync_api import Locator, Page, expect
from pypdf import PdfReader

from aggregator.tenancy.models import Organization, User
from billing.invoicing.close import period_close
from billing.invoicing.models import Invoice
from billing.ledger.flows import vendor_account_settle
from billing.ledger.models import CreditPurchase
from billing.ledger.services import credit_purchase_record
from billing.payments.localstripe import LocalStripe
from billing.payments.records import Payment
from billing.topups.models import TopUp, TopUpRule
from providers.models import CostRecord, SyncRun, VendorAccount
from providers.sandbox.base import SandboxServer
from providers.sandbox.demo import DEMO_KEYS, DEMO_SANDBOXES
from providers.services import sync_run_request, vendor_account_create
from tests.billing.conftest import cost
from tests.e2e.browser import sign_in
from tests.factories import IssuerFactory, VendorAccountFactory

pytestmark = pytest.mark.e2e

Shot = Callable[[str], Path]


def test_sign_in_with_a_wrong_password_then_the_right_one(page: Page, customer: User, shot: Shot) -> None:
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/$"))
    shot("login")
    page.fill("#id_username", "owner@acme.test")
    page.fill("#id_password", "not the password")
    page.click("main form button[type=submit]")
    expect(page.get_by_role("alert")).to_contain_text("correct email")
    page.fill("#id_password", "correct horse battery staple")
    page.click("main form button[type=submit]")
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.locator("h1")).to_have_text("Dashboard")
    expect(page.locator(".org-name")).to_have_text("Acme Corp")
    expect(page.locator(".who")).to_have_text("owner@acme.test")
    shot("dashboard-empty")


NAVIGATION = [
    ("#nav-dashboard", "Dashboard", "dashboard"),
    ("#nav-vendor-accounts", "Vendor accounts", "vendor-accounts"),
    ("#nav-credits", "Credits", "credits"),
    ("#nav-usage", "Usage", "usage"),
    ("#nav-invoices", "Invoices", "invoices"),
    ("#nav-payment-methods", "Payment methods", "payment-methods"),
    ("#nav-team", "Team", "team"),
    ("#nav-billing-profile", "Billing profile", "billing-profile"),
    ("#nav-security", "Security", "security"),
]


def test_every_page_of_the_navigation_opens(page: Page, organization: Organization, shot: Shot) -> None:
    VendorAccountFactory(organization=organization, vendor="openai", label="OpenAI prod")
    sign_in(page)
    for link, title, name in NAVIGATION:
        page.click(link)
        expect(page.locator("h1")).to_have_text(title)
        shot(f"page-{name}")


def test_the_portal_switches_to_japanese_and_stays_so(page: Page, organization: Organization, shot: Shot) -> None:
    VendorAccountFactory(organization=organization, vendor="openai", label="OpenAI prod")
    sign_in(page)
    expect(page.locator("html")).to_have_attribute("lang", "en")
    page.select_option("#lang-select", "ja")
    page.click("form.lang button[type=submit]")
    expect(page.locator("html")).to_have_attribute("lang", "ja")
    expect(page.locator("#lang-select")).to_have_value("ja")
    for link, title, name in NAVIGATION:
        page.click(link)  # the choice is remembered from page to page
        expect(page.locator("html")).to_have_attribute("lang", "ja")
        expect(page.locator(link)).to_have_text(japanese(title))
        expect(page.locator("h1")).to_have_text(japanese(title))
        shot(f"{name}-ja")


def japanese(message: str) -> str:
    """The Japanese catalog's translation of ``message``; fails when there is none."""
    with translation.override("ja"):
        translated = translation.gettext(message)
    assert translated != message, f"No Japanese translation of {message!r} in locale/ja"
    return translated


def test_link_a_sandbox_vendor_account_and_see_it_sync(
    page: Page, organization: Organization, sandboxes: dict[str, SandboxServer], shot: Shot
) -> None:
    sandbox = sandboxes["openai"]
    sign_in(page)
    page.click("#nav-vendor-accounts")
    expect(page.locator("#accounts")).to_contain_text("No vendor accounts are linked yet.")
    page.click("#link-openai")
    page.fill("#id_label", "OpenAI production")
    page.fill("#id_admin_key", DEMO_KEYS["openai"]["admin_key"])
    page.locator("#link-form details summary").click()  # "Advanced": the API base, here the sandbox's
    page.fill("#id_api_base", f"{sandbox.url}/v1")
    shot("vendor-account-link")
    page.click("#link-submit")

    expect(page.locator("h1")).to_have_text("OpenAI production")
    expect(page.locator(".messages")).to_contain_text("OpenAI production is linked.")
    expect(page.locator("#credentials-masked")).not_to_contain_text(DEMO_KEYS["openai"]["admin_key"])
    page.click("#test-connection")
    expect(page.locator(".messages")).to_contain_text("Connection works")
    page.click("#sync-now")  # Celery runs eager: the sync is done when the page comes back
    expect(page.locator(".messages")).to_contain_text("is queued")
    run = page.locator("#sync-history tr[data-run]").first
    expect(run.locator(".badge")).to_have_text("Succeeded")
    account = VendorAccount.objects.get(organization=organization)
    (sync,) = SyncRun.objects.filter(vendor_account=account)
    assert sync.status == SyncRun.Status.SUCCEEDED and sync.trigger == SyncRun.Trigger.PORTAL
    assert sync.rows_written >= CostRecord.objects.filter(vendor_account=account).count() > 0
    assert any(r.path.startswith("/v1/organization/costs") for r in sandbox.vendor.requests)
    expect(run.locator("td.num")).to_have_text(str(sync.rows_written))
    expect(page.locator("#account-status-badge")).to_have_text("Active")
    shot("vendor-account")

    page.click("#nav-vendor-accounts")
    row = page.locator(f"#accounts tr[data-account='{account.pk}']")
    expect(row).to_contain_text("OpenAI production")
    expect(row.locator(".badge.run-succeeded")).to_have_text("Succeeded")
    shot("vendor-accounts")


def test_dashboard_figures_equal_the_apis(
    page: Page, organization: Organization, sandboxes: dict[str, SandboxServer], shot: Shot
) -> None:
    """Two accounts synced from the sandboxes, credits bought, the day's settlement run: each figure
    of the dashboard is the one the API gives."""
    today = timezone.now().date()
    accounts = {}
    for sandbox in DEMO_SANDBOXES:
        if sandbox.vendor in sandboxes:
            account = vendor_account_create(
                organization=organization,
                vendor=sandbox.vendor,
                label=sandbox.label,
                credentials=DEMO_KEYS[sandbox.vendor],
                api_base=sandboxes[sandbox.vendor].url + sandbox.api_path,
            )
            run = sync_run_request(account=account, trigger=SyncRun.Trigger.COMMAND)  # runs on commit (eager)
            run.refresh_from_db()
            assert run.status == SyncRun.Status.SUCCEEDED, run.error
            credit_purchase_record(
                vendor_account=account,
                amount=Decimal("5000.00"),
                currency="USD",
                kind="purchase",
                effective_at=timezone.now() - timedelta(days=45),
            )
            vendor_account_settle(vendor_account_id=account.pk)
            accounts[sandbox.vendor] = account

    sign_in(page)
    shot("dashboard")
    for vendor, account in accounts.items():
        api = page.request.get(f"/api/v1/vendor-accounts/{account.pk}/balance/").json()
        card = page.locator(f"#vendors article[data-vendor={vendor}]")
        expect(card.locator("h3")).to_have_text(account.label)
        figures = card.locator("dd")
        expect(figures.nth(0)).to_have_text(f"{cents(api['balance'])} USD")
        expect(figures.nth(1)).to_have_text(f"{cents(api['burn_rate_per_day'])} USD/day")
        expect(figures.nth(2)).to_have_text(f"{api['runway_days']} days ({api['depletion_date']})")
        assert Decimal(api["balance"]) < Decimal("5000.00")  # the synced spend was charged against it

    month_start = today.replace(day=1)
    spent = Decimal(0)
    url: str | None = f"/api/v1/costs/daily/?start={month_start}&page_size=500"
    while url:
        body = page.request.get(url).json()
        spent += sum((Decimal(row["billed_cost"]) for row in body["results"]), Decimal(0))
        url = body["next"]
    expect(page.get_by_test_id("mtd")).to_have_text(f"{cents(spent)} USD")


def cents(amount: str | Decimal) -> str:
    """How the portal shows an amount (Django's floatformat:2 rounds half up)."""
    return str(Decimal(amount).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


VISA = "4242424242424242"
VISA_3DS = "4000002760003184"  # always asks for 3-D Secure


def closed_invoice(organization: Organization) -> Invoice:
    """Last month's invoice of ``organization``: OpenAI costs on three days, settled and closed the
    way the monthly job does it (finalized, numbered, PDF rendered)."""
    IssuerFactory(name="Operator Inc.", legal_name="Operator Inc.", is_default=True,
                  address="1 Market Street\nSan Francisco, CA")  # fmt: skip
    account = VendorAccountFactory(organization=organization, vendor="openai", label="OpenAI prod")
    first = (timezone.now().date().replace(day=1) - timedelta(days=1)).replace(day=1)
    for day, amount in ((1, "40.00"), (2, "35.25"), (3, "45.25")):
        cost(account, first.replace(day=day), amount)
    invoice = period_close(organization=organization, period=f"{first:%Y-%m}")
    invoice.refresh_from_db()  # its PDF was rendered once finalizing committed (Celery runs eager)
    assert (invoice.status, invoice.total, bool(invoice.pdf)) == (Invoice.Status.OPEN, Decimal("120.50"), True)
    return invoice


@pytest.mark.parametrize("number", [VISA, VISA_3DS], ids=["card", "card-3d-secure"])
def test_an_invoice_is_opened_its_pdf_downloaded_and_paid_by_card(
    page: Page, organization: Organization, stripe_live: LocalStripe, shot: Shot, number: str
) -> None:
    invoice = closed_invoice(organization)
    sign_in(page)
    page.click("#nav-invoices")
    row = page.locator(f"#invoices tr[data-invoice='{invoice.pk}']")
    expect(row).to_contain_text(invoice.number)
    expect(row.locator("td.num").nth(0)).to_have_text("120.50 USD")
    expect(row.locator("td.num").nth(1)).to_have_text("120.50 USD")
    shot("invoices")

    row.get_by_role("link", name=invoice.number).click()
    expect(page.locator("h1")).to_have_text(f"Invoice {invoice.number}")
    expect(page.locator("#invoice-status")).to_have_text("Open")
    expect(page.locator("#left-to-pay")).to_have_text("120.50 USD")
    shot("invoice")
    with page.expect_download() as download_info:
        page.click("#invoice-pdf")
    pdf = Path(download_info.value.path()).read_bytes()
    assert pdf.startswith(b"%PDF-")
    text = "".join(p.extract_text() for p in PdfReader(BytesIO(pdf)).pages)
    assert invoice.number in text and "120.50" in text

    page.click("#invoice-pay")
    expect(page.locator("#pay-amount")).to_have_text("120.50 USD")
    expect(page.locator("#pay-button")).to_be_enabled()  # Stripe.js (localstripe's) mounted the card
    fill_card(page.locator("#card-element"), number)
    shot("pay")
    page.click("#pay-button")
    status = page.locator("#payment-status")
    authenticate = page.get_by_role("button", name="Complete authentication")
    expect(authenticate.or_(status.locator("xpath=self::*[@data-state='paid']"))).to_be_visible()
    if authenticate.is_visible():  # the 3-D Secure dialog of the Stripe.js stand-in
        assert number == VISA_3DS
        shot("pay-3d-secure")
        authenticate.click()
    # Paid once localstripe's signed payment_intent.succeeded reached /webhooks/stripe/.
    expect(status).to_have_attribute("data-state", "paid", timeout=20_000)
    expect(status).to_have_text("Paid. Thank you!")
    shot("pay-paid")

    page.click("#pay-done a")
    expect(page.locator("#invoice-status")).to_have_text("Paid")
    expect(page.locator("#left-to-pay")).to_have_text("0.00 USD")
    expect(page.locator("#invoice-payments tr[data-status=succeeded]")).to_contain_text("120.50 USD")
    expect(page.locator("#invoice-pay")).to_have_count(0)
    shot("invoice-paid")
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.PAID
    (payment,) = Payment.objects.filter(invoice=invoice)
    assert (payment.status, payment.amount, payment.currency) == (Payment.Status.SUCCEEDED, Decimal("120.50"), "USD")


def test_save_a_card_record_a_purchase_and_set_a_top_up_rule(
    page: Page, organization: Organization, stripe_live: LocalStripe, shot: Shot
) -> None:
    account = VendorAccountFactory(organization=organization, vendor="openai", label="OpenAI prod")
    sign_in(page)

    # A card for automatic payments, saved with Stripe.js (confirmCardSetup against localstripe).
    page.click("#nav-payment-methods")
    expect(page.locator("#payment-methods")).to_contain_text("No saved payment methods yet.")
    expect(page.locator("#save-card-button")).to_be_enabled()
    fill_card(page.locator("#setup-card-element"), VISA)
    page.click("#save-card-button")
    method = page.locator("#payment-methods li[data-payment-method]")
    expect(method).to_have_count(1)
    expect(method.locator(".pm-label")).to_contain_text("4242")
    expect(method.locator(".pm-default")).to_be_visible()
    shot("payment-methods")

    page.click("#nav-credits")
    expect(page.locator("#balance-amount")).to_have_text("0.00 USD")
    page.fill("#id_amount", "250.00")
    page.fill("#id_note", "Prepaid at OpenAI")
    page.click("#purchase-submit")
    expect(page.locator(".messages")).to_contain_text("Recorded purchase of 250.00 USD for OpenAI prod.")
    expect(page.locator("#balance-amount")).to_have_text("250.00 USD")
    expect(page.locator("#purchases tbody tr")).to_have_count(1)
    expect(page.locator("#purchases tbody tr")).to_contain_text("Prepaid at OpenAI")
    (purchase,) = CreditPurchase.objects.filter(vendor_account=account)
    assert (purchase.amount, purchase.currency, purchase.kind) == (Decimal("250.00"), "USD", "purchase")

    page.click("#new-top-up-rule")
    expect(page.locator("#id_vendor_account")).to_have_value(str(account.pk))
    page.select_option("#id_trigger", "balance_below")
    page.fill("#id_threshold_amount", "100")
    page.select_option("#id_method", "fixed")
    page.fill("#id_amount", "500")
    shot("top-up-rule")
    page.click("#rule-submit")
    expect(page.locator(".messages")).to_contain_text("The top-up rule was saved.")
    rule = page.locator("#top-up-rules li.rule")
    expect(rule).to_have_count(1)
    expect(rule).to_contain_text("when the balance is below 100.00 USD")
    expect(rule).to_contain_text("add 500.00 USD")
    expect(rule.locator(".badge")).to_have_text("On")
    shot("credits")
    (saved,) = TopUpRule.objects.filter(organization=organization)
    assert (saved.vendor_account, saved.threshold_amount, saved.amount, saved.enabled) == (
        account, Decimal("100"), Decimal("500"), True)  # fmt: skip
    assert not TopUp.objects.exists()  # 250.00 is above the threshold: nothing charged yet


def fill_card(element: Locator, number: str) -> None:
    """Type a card into the card Element (localstripe's stand-in renders plain inputs)."""
    for field, value in (("number", number), ("exp_month", "12"), ("exp_year", "30"), ("cvc", "123"),
                         ("postal_code", "94107")):  # fmt: skip
        element.locator(f"input[placeholder={field}]").fill(value)

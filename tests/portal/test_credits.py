"""Portal credits: ledger history, recording purchases and grants, top-up rules with their
preview, and the top-up history with decline reasons; roles and tenant scoping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from aggregator.tenancy.models import AuditEvent, Organization, User
from billing.ledger import accounts
from billing.ledger.models import CreditPurchase, LedgerAccount
from billing.ledger.services import credit_purchase_record
from billing.ledger.settlement import settle_vendor_account
from billing.payments.gateways import FAKE_GATEWAY
from billing.payments.models import PaymentMethod
from billing.topups.models import TopUp, TopUpAttempt, TopUpRule
from providers.models import VendorAccount
from tests.billing.conftest import cost
from tests.factories import PaymentMethodFactory, TopUpFactory, TopUpRuleFactory, VendorAccountFactory
from tests.portal.conftest import text

PREVIEW = "At the current burn rate of 12.50 USD a day this tops up 500.00 USD about every 40 days."


@pytest.fixture(autouse=True)
def payment_gateways(settings: Any) -> None:
    settings.PAYMENT_GATEWAYS = [FAKE_GATEWAY]


@pytest.fixture
def account(organization: Organization) -> VendorAccount:
    """500 USD bought 40 days ago, 12.50 USD spent on each of the last three days, settled."""
    account = VendorAccountFactory(organization=organization, label="OpenAI prod")
    credit_purchase_record(
        vendor_account=account,
        amount=Decimal("500"),
        currency="USD",
        kind="purchase",
        effective_at=timezone.now() - timedelta(days=40),
    )
    today = timezone.now().date()
    for i in range(1, 4):
        cost(account, today - timedelta(days=i), "12.50", key=f"k{i}")
    settle_vendor_account(vendor_account_id=account.pk)
    return account


@pytest.fixture
def card(organization: Organization) -> PaymentMethod:
    return PaymentMethodFactory(organization=organization, is_default=True)


def _rule_form(account: VendorAccount, card: PaymentMethod, **changes: str) -> dict[str, str]:
    data = {
        "target_kind": "vendor_account",
        "vendor_account": str(account.pk),
        "trigger": "balance_below",
        "threshold_amount": "100",
        "threshold_days": "",
        "method": "fixed",
        "amount": "500",
        "target_balance": "",
        "minimum_amount": "",
        "maximum_amount": "",
        "monthly_cap": "",
        "primary_method": str(card.pk),
        "fallback_method": "",
        "enabled": "on",
    }
    data.update(changes)
    return data


def test_the_page_shows_the_balance_and_the_ledger_with_the_balance_after_each_entry(
    as_viewer: Client, account: VendorAccount
) -> None:
    page = text(as_viewer.get(f"/credits/?account={account.pk}"))
    assert "462.50 USD" in page  # 500 bought, 3 × 12.50 consumed
    for after in ("500.00 USD", "487.50 USD", "475.00 USD", "462.50 USD"):
        assert f'<td class="num">{after}</td>' in page
    assert 'id="purchase-form"' not in page and 'id="new-top-up-rule"' not in page


def test_recording_a_purchase_credits_the_ledger_once_and_is_audited(
    as_admin: Client, account: VendorAccount, billing_admin: User
) -> None:
    form = {
        "vendor_account": str(account.pk),
        "kind": "purchase",
        "amount": "250.00",
        "currency": "usd",
        "effective_at": "2026-11-20T09:30",
        "expires_at": "2027-11-20T09:30",
        "note": "Invoice 4711",
        "request_key": "4d1b0c0e9f",
    }
    response = as_admin.post("/credits/purchases/", form, follow=True)
    assert "Recorded purchase of 250.00 USD for OpenAI prod." in text(response)
    as_admin.post("/credits/purchases/", form)  # the same form submitted twice
    purchase = CreditPurchase.objects.get(note="Invoice 4711")
    assert (purchase.amount, purchase.currency, purchase.created_by) == (Decimal("250"), "USD", billing_admin)
    assert purchase.effective_at == datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
    key = accounts.vendor_prepaid(account.pk, account.organization_id, "USD").key
    assert LedgerAccount.objects.get(key=key).balance == Decimal("712.5")
    event = AuditEvent.objects.get(action="credit_purchase.record", object_id=str(purchase.pk))
    assert event.actor == billing_admin and event.after["amount"] == "250.00"


def test_a_grant_is_recorded_as_a_grant(as_admin: Client, account: VendorAccount) -> None:
    as_admin.post(
        "/credits/purchases/",
        {
            "vendor_account": account.pk,
            "kind": "grant",
            "amount": "25",
            "currency": "USD",
            "effective_at": "2026-11-20T00:00",
            "request_key": "g1",
        },
    )
    assert CreditPurchase.objects.get(kind="grant").amount == Decimal("25")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"amount": "-5"}, "Ensure this value is greater than or equal to 0."),
        ({"amount": "0"}, "amount must be positive; record corrections as a separate adjustment."),
        ({"currency": "DOLLARS"}, "Ensure this value has at most 3 characters (it has 7)."),
        ({"currency": "ZZZ"}, "not an ISO 4217 currency"),
        ({"expires_at": "2026-11-01T00:00"}, "The expiry must be after the purchase."),
        ({"effective_at": "yesterday"}, "Enter a valid date/time."),
    ],
)
def test_a_bad_purchase_is_refused_with_a_clear_message(
    as_admin: Client, account: VendorAccount, changes: dict[str, str], message: str
) -> None:
    form = {
        "vendor_account": account.pk,
        "kind": "purchase",
        "amount": "10",
        "currency": "USD",
        "effective_at": "2026-11-20T00:00",
        "request_key": "x1",
        **changes,
    }
    response = as_admin.post("/credits/purchases/", form)
    assert response.status_code == 400
    assert message in text(response)
    assert CreditPurchase.objects.count() == 1  # only the fixture's


def test_a_new_rule_previews_and_saves_with_the_burn_rate_sentence(
    as_admin: Client, account: VendorAccount, card: PaymentMethod, billing_admin: User
) -> None:
    preview = as_admin.post("/credits/top-up-rules/new/", {**_rule_form(account, card), "preview": "1"})
    assert PREVIEW in text(preview) and not TopUpRule.objects.exists()
    response = as_admin.post("/credits/top-up-rules/new/", _rule_form(account, card), follow=True)
    rule = TopUpRule.objects.get()
    assert (rule.threshold_amount, rule.amount, rule.currency, rule.enabled) == (
        Decimal("100"),
        Decimal("500"),
        "USD",
        True,
    )
    assert PREVIEW in text(response)
    event = AuditEvent.objects.get(action="top_up_rule.create")
    assert event.actor == billing_admin and event.after["amount"] == "500"


def test_the_preview_of_a_runway_rule_with_a_monthly_cap(
    as_admin: Client, account: VendorAccount, card: PaymentMethod
) -> None:
    form = _rule_form(
        account,
        card,
        trigger="runway_below",
        threshold_amount="",
        threshold_days="7",
        method="target_balance",
        amount="",
        target_balance="300",
        monthly_cap="200",
        preview="1",
    )
    # At 7 days × 12.50 = 87.50 it tops up to 300: 212.50, about every 17 days; 30 days cost 375 > 200.
    assert (
        "At the current burn rate of 12.50 USD a day this tops up 212.50 USD about every 17 days. "
        "The monthly cap of 200.00 USD runs out before the month ends."
    ) in text(as_admin.post("/credits/top-up-rules/new/", form))


def test_service_rule_errors_are_shown_by_the_field(as_admin: Client, account: VendorAccount, card: Any) -> None:
    form = _rule_form(account, card, method="target_balance", amount="", target_balance="50")
    response = as_admin.post("/credits/top-up-rules/new/", form)
    assert response.status_code == 400
    assert "must be above threshold_amount (100): otherwise each top-up leaves the balance below the threshold." in (
        text(response)
    )
    assert 'href="#id_target_balance"' in text(response)
    assert not TopUpRule.objects.exists()


def test_editing_and_turning_off_a_rule_is_audited_with_before_and_after(
    as_admin: Client, account: VendorAccount, card: PaymentMethod
) -> None:
    rule = TopUpRuleFactory(organization=account.organization, vendor_account=account, primary_method=card)
    page = text(as_admin.get(f"/credits/top-up-rules/{rule.pk}/"))
    assert PREVIEW in page and 'value="500.0000000000"' in page
    as_admin.post(f"/credits/top-up-rules/{rule.pk}/", _rule_form(account, card, amount="750"))
    rule.refresh_from_db()
    assert rule.amount == Decimal("750")
    as_admin.post(f"/credits/top-up-rules/{rule.pk}/toggle/")
    rule.refresh_from_db()
    assert rule.enabled is False
    change, off = AuditEvent.objects.filter(action="top_up_rule.update").order_by("id")
    assert (change.before["amount"], change.after["amount"]) == ("500.0000000000", "750")
    assert (off.before["enabled"], off.after["enabled"]) == ("True", "False")


def test_the_top_up_history_shows_each_attempt_and_its_decline_reason(
    as_viewer: Client, account: VendorAccount, card: PaymentMethod
) -> None:
    top_up = TopUpFactory(
        organization=account.organization,
        rule__vendor_account=account,
        rule__primary_method=card,
        status="failed",
        last_error="Your card was declined: ask your bank.",
    )
    TopUpAttempt.objects.create(
        organization=account.organization,
        top_up=top_up,
        number=1,
        gateway="fake",
        payment_method_reference="pm_x",
        payment_method_label="Visa •••• 4242",
        idempotency_key=f"topup:{top_up.pk}:attempt:1",
        outcome="declined",
        decline_code="insufficient_funds",
        message="The card has insufficient funds.",
    )
    page = text(as_viewer.get("/credits/"))
    assert "Your card was declined: ask your bank." in page
    assert "#1 Visa •••• 4242: Declined — <code>insufficient_funds</code> — The card has insufficient funds." in page


def test_another_organizations_account_and_rules_are_not_found(
    as_owner: Client, organization: Organization, other_organization: Organization
) -> None:
    VendorAccountFactory(organization=organization)
    theirs = VendorAccountFactory(organization=other_organization)
    rule = TopUpRuleFactory(organization=other_organization)
    assert as_owner.get(f"/credits/?account={theirs.pk}").status_code == 404
    assert as_owner.get(f"/credits/top-up-rules/{rule.pk}/").status_code == 404
    assert as_owner.post(f"/credits/top-up-rules/{rule.pk}/", {"amount": "1"}).status_code == 404
    assert as_owner.post(f"/credits/top-up-rules/{rule.pk}/toggle/").status_code == 404
    response = as_owner.post(
        "/credits/purchases/",
        {
            "vendor_account": theirs.pk,
            "kind": "purchase",
            "amount": "5",
            "currency": "EUR",
            "effective_at": "2026-11-20T00:00",
            "request_key": "k",
        },
    )
    assert response.status_code == 400
    assert "Choose one of your organization&#x27;s vendor accounts." in text(response)
    rule.refresh_from_db()
    assert rule.enabled and not CreditPurchase.objects.exists()


@pytest.mark.parametrize(
    "path",
    [
        "/credits/purchases/",
        "/credits/top-up-rules/new/",
        "/credits/top-up-rules/{rule}/",
        "/credits/top-up-rules/{rule}/toggle/",
    ],
)
def test_a_viewer_cannot_change_credits_or_rules(
    as_viewer: Client, account: VendorAccount, card: PaymentMethod, path: str
) -> None:
    rule = TopUpRuleFactory(organization=account.organization, vendor_account=account, primary_method=card)
    before = (CreditPurchase.objects.count(), list(TopUpRule.objects.values()), TopUp.objects.count())
    data = {
        **_rule_form(account, card, amount="999"),
        "kind": "purchase",
        "currency": "USD",
        "effective_at": "2026-11-20T00:00",
        "request_key": "v",
    }
    response = as_viewer.post(path.format(rule=rule.pk), data)
    assert response.status_code == 403
    assert (CreditPurchase.objects.count(), list(TopUpRule.objects.values()), TopUp.objects.count()) == before

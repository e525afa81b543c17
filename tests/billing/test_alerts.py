from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.core import mail
from django.utils import timezone
from rest_framework.test import APIClient

from aggregator.tenancy.models import Organization, Role
from billing.alerts.models import Alert, AlertPolicy
from billing.alerts.services import alerts_evaluate_vendor_account
from billing.ledger.services import credit_purchase_record
from billing.ledger.settlement import settle_vendor_account
from providers.models import VendorAccount
from tests.billing.conftest import cost
from tests.factories import MembershipFactory


def _spend(account: VendorAccount, amounts: list[str]) -> None:
    today = timezone.now().date()
    for i, amount in enumerate(reversed(amounts), start=1):
        cost(account, today - timedelta(days=i), amount)
    settle_vendor_account(vendor_account_id=account.pk)


def _open(kind: str) -> list[Alert]:
    return list(Alert.objects.filter(kind=kind, status=Alert.Status.OPEN))


def test_low_runway_opens_one_alert_emails_billing_admins_and_never_repeats(
    vendor_account: VendorAccount, owner: Any, django_capture_on_commit_callbacks: Any
) -> None:
    MembershipFactory(organization=vendor_account.organization, role=Role.BILLING_ADMIN, user__email="ada@acme.test")
    MembershipFactory(organization=vendor_account.organization, role=Role.VIEWER, user__email="vic@acme.test")
    credit_purchase_record(
        vendor_account=vendor_account,
        amount=Decimal("100"),
        currency="USD",
        kind="purchase",
        effective_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    _spend(vendor_account, ["20.00"] * 3)  # 40 left at 20/day: 2 days
    with django_capture_on_commit_callbacks(execute=True):
        first = alerts_evaluate_vendor_account(account=vendor_account)
    with django_capture_on_commit_callbacks(execute=True):
        again = alerts_evaluate_vendor_account(account=vendor_account)
    assert {a.kind for a in first} == {"low_balance", "depletion_soon"}
    assert again == []
    assert len(mail.outbox) == 2
    assert sorted(mail.outbox[0].to) == ["ada@acme.test", "owner@acme.test"]
    low = _open("low_balance")[0]
    assert "balance 40.00 USD, about 2.0 days left at 20.00 USD/day" in low.message


def test_an_alert_resolves_when_the_condition_clears_and_can_open_again(vendor_account: VendorAccount) -> None:
    credit_purchase_record(
        vendor_account=vendor_account,
        amount=Decimal("100"),
        currency="USD",
        kind="purchase",
        effective_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    _spend(vendor_account, ["20.00"] * 3)
    alerts_evaluate_vendor_account(account=vendor_account)
    credit_purchase_record(
        vendor_account=vendor_account,
        amount=Decimal("10000"),
        currency="USD",
        kind="purchase",
        effective_at=datetime(2026, 1, 2, tzinfo=UTC),
    )
    alerts_evaluate_vendor_account(account=vendor_account)
    assert _open("low_balance") == []
    assert Alert.objects.get(kind="low_balance").resolved_at is not None


def test_a_spike_far_above_the_baseline_is_an_anomaly(vendor_account: VendorAccount) -> None:
    AlertPolicy.objects.create(organization=vendor_account.organization, low_balance_days=0, depletion_within_days=0)
    credit_purchase_record(
        vendor_account=vendor_account,
        amount=Decimal("100000"),
        currency="USD",
        kind="purchase",
        effective_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    _spend(vendor_account, ["10.00"] * 14 + ["31.00"])
    alerts = alerts_evaluate_vendor_account(account=vendor_account)
    assert [a.kind for a in alerts] == ["spend_anomaly"]
    assert alerts[0].details["spent"] == "31.0000000000" and alerts[0].details["baseline"] == "10.0000000000"


def test_exhausted_credits_and_failing_syncs_are_alerts(vendor_account: VendorAccount) -> None:
    VendorAccount.objects.filter(pk=vendor_account.pk).update(
        status=VendorAccount.Status.CREDITS_EXHAUSTED,
        failure_streak=3,
        last_success_at=timezone.now() - timedelta(hours=7),
        status_message="OpenAI says the quota is exhausted.",
    )
    vendor_account.refresh_from_db()
    kinds = {a.kind for a in alerts_evaluate_vendor_account(account=vendor_account)}
    assert {"credits_exhausted", "sync_failing"} <= kinds


def test_a_wallet_past_its_credit_limit_alerts(db: Any) -> None:
    from tests.factories import OrganizationFactory, VendorAccountFactory

    org = OrganizationFactory(billing_mode=Organization.BillingMode.PREPAID_WALLET, credit_limit=Decimal("5"))
    account = VendorAccountFactory(organization=org)
    _spend(account, ["3.00", "3.00"])
    kinds = {a.kind for a in alerts_evaluate_vendor_account(account=account)}
    assert "credit_limit_exceeded" in kinds
    assert "-6.00 USD is past the credit limit of 5.00 USD" in _open("credit_limit_exceeded")[0].message


def test_alerts_api_lists_the_organizations_alerts(owner_client: APIClient, vendor_account: VendorAccount) -> None:
    VendorAccount.objects.filter(pk=vendor_account.pk).update(status=VendorAccount.Status.CREDITS_EXHAUSTED)
    vendor_account.refresh_from_db()
    alerts_evaluate_vendor_account(account=vendor_account)
    body = owner_client.get("/api/v1/alerts/?status=open").json()
    assert body["count"] == 1 and body["results"][0]["kind"] == "credits_exhausted"

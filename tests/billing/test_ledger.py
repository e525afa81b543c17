"""The double-entry ledger: postings, purchases, settlement, expiry, runway, reconciliation."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from rest_framework.test import APIClient

from aggregator.tenancy.models import Organization
from billing.fx.models import FxRate
from billing.ledger import accounts
from billing.ledger.flows import vendor_account_settle
from billing.ledger.models import CreditPurchase, LedgerAccount, LedgerEntry, LedgerImmutable, LedgerTransaction
from billing.ledger.posting import UnbalancedTransaction, ledger_post
from billing.ledger.selectors import balance_of, burn_rate, runway, vendor_account_runway
from billing.ledger.services import credit_purchase_record, credits_expire_due
from billing.ledger.settlement import settle_vendor_account, settle_vendor_account_day
from providers.models import VendorAccount
from tests.billing.conftest import DAY, cost

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def prepaid(account: VendorAccount, currency: str = "USD") -> Decimal:
    return balance_of(key=accounts.vendor_prepaid(account.pk, account.organization_id, currency).key)


def test_a_transaction_must_balance_per_currency(organization: Organization) -> None:
    a, b = accounts.receivable(organization.pk, "USD"), accounts.revenue_fees(organization.pk, "USD")
    with pytest.raises(UnbalancedTransaction, match="does not balance"):
        ledger_post(
            kind="adjustment",
            idempotency_key="x",
            entries=[(a, Decimal("1.00")), (b, Decimal("-0.99"))],
            effective_at=T0,
        )
    assert LedgerTransaction.objects.count() == 0
    eur = accounts.revenue_fees(organization.pk, "EUR")
    with pytest.raises(UnbalancedTransaction):
        ledger_post(
            kind="adjustment", idempotency_key="y", entries=[(a, Decimal(1)), (eur, Decimal(-1))], effective_at=T0
        )


def test_posting_the_same_key_twice_posts_once(organization: Organization) -> None:
    a, b = accounts.receivable(organization.pk, "USD"), accounts.revenue_fees(organization.pk, "USD")
    first = ledger_post(
        kind="adjustment", idempotency_key="k1", entries=[(a, Decimal("2.50")), (b, Decimal("-2.50"))], effective_at=T0
    )
    again = ledger_post(
        kind="adjustment", idempotency_key="k1", entries=[(a, Decimal("2.50")), (b, Decimal("-2.50"))], effective_at=T0
    )
    assert first == again
    assert balance_of(key=a.key) == Decimal("2.50")
    assert LedgerEntry.objects.count() == 2


def test_posted_entries_cannot_be_changed_or_deleted(organization: Organization) -> None:
    a, b = accounts.receivable(organization.pk, "USD"), accounts.revenue_fees(organization.pk, "USD")
    ledger_post(kind="adjustment", idempotency_key="k", entries=[(a, Decimal(1)), (b, Decimal(-1))], effective_at=T0)
    entry = LedgerEntry.objects.first()
    assert entry is not None
    entry.amount = Decimal(5)
    with pytest.raises(LedgerImmutable):
        entry.save()
    with pytest.raises(LedgerImmutable):
        entry.delete()


@pytest.mark.django_db(transaction=True)
def test_the_database_refuses_to_update_or_delete_entries_on_postgresql(organization: Organization) -> None:
    from django.db import DatabaseError, connection

    if connection.vendor != "postgresql":
        pytest.skip("the append-only trigger is PostgreSQL's")
    a, b = accounts.receivable(organization.pk, "USD"), accounts.revenue_fees(organization.pk, "USD")
    ledger_post(kind="adjustment", idempotency_key="k", entries=[(a, Decimal(1)), (b, Decimal(-1))], effective_at=T0)
    with pytest.raises(DatabaseError, match="append-only"), connection.cursor() as cursor:
        cursor.execute("UPDATE billing_ledgerentry SET amount = 5")
    with pytest.raises(DatabaseError, match="append-only"), connection.cursor() as cursor:
        cursor.execute("DELETE FROM billing_ledgerentry")
    assert LedgerEntry.objects.filter(amount=Decimal(1)).count() == 1


def test_balance_at_a_date_reads_back_from_the_running_balance(organization: Organization) -> None:
    a, b = accounts.receivable(organization.pk, "USD"), accounts.revenue_fees(organization.pk, "USD")
    for i, amount in enumerate(["10.00", "5.25", "1.75"]):
        ledger_post(
            kind="adjustment",
            idempotency_key=f"k{i}",
            entries=[(a, Decimal(amount)), (b, -Decimal(amount))],
            effective_at=T0 + timedelta(days=i),
        )
    assert balance_of(key=a.key) == Decimal("17.00")
    assert balance_of(key=a.key, at=T0 + timedelta(days=1)) == Decimal("15.25")
    assert balance_of(key=a.key, at=T0 - timedelta(days=1)) == Decimal("0")
    assert LedgerAccount.objects.get(key=a.key).balance == Decimal("17.00")


def test_purchase_through_the_api_raises_the_vendor_balance(
    owner_client: APIClient, vendor_account: VendorAccount
) -> None:
    url = f"/api/v1/vendor-accounts/{vendor_account.pk}/purchases/"
    body = {
        "amount": "500.00",
        "currency": "usd",
        "kind": "purchase",
        "effective_at": "2026-11-01T00:00:00Z",
        "expires_at": "2027-11-01T00:00:00Z",
    }
    response = owner_client.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY="order-17")
    assert response.status_code == 201, response.json()
    assert response.json()["amount"] == "500.0000000000"
    again = owner_client.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY="order-17")
    assert again.json()["id"] == response.json()["id"]
    owner_client.post(url, {**body, "amount": "20", "kind": "grant"}, format="json")
    assert prepaid(vendor_account) == Decimal("520.00")
    assert owner_client.get(url).json()["count"] == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"amount": "-5"}, "amount"),
        ({"currency": "ZZZ"}, "ISO 4217"),
        ({"kind": "gift"}, "kind"),
        ({"expires_at": "2026-10-01T00:00:00Z"}, "expires_at must be after effective_at"),
    ],
)
def test_bad_purchases_are_refused_and_nothing_is_posted(
    owner_client: APIClient, vendor_account: VendorAccount, change: dict[str, str], message: str
) -> None:
    body = {"amount": "500.00", "currency": "USD", "kind": "purchase", "effective_at": "2026-11-01T00:00:00Z", **change}
    response = owner_client.post(f"/api/v1/vendor-accounts/{vendor_account.pk}/purchases/", body, format="json")
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]
    assert LedgerTransaction.objects.count() == 0


def test_settlement_posts_the_days_consumption_and_charges_the_customer(vendor_account: VendorAccount) -> None:
    credit_purchase_record(
        vendor_account=vendor_account, amount=Decimal("100"), currency="USD", kind="purchase", effective_at=T0
    )
    cost(vendor_account, DAY, "12.3456789", key="a")
    cost(vendor_account, DAY, "0.0000011", key="b")
    assert settle_vendor_account_day(vendor_account_id=vendor_account.pk, day=DAY) == 2
    assert prepaid(vendor_account) == Decimal("87.6543200")
    org = vendor_account.organization_id
    assert balance_of(key=accounts.receivable(org, "USD").key) == Decimal("12.3456800")
    assert balance_of(key=accounts.revenue_consumption(org, "USD").key) == Decimal("-12.3456800")


def test_a_restated_day_posts_only_the_delta_and_an_unchanged_day_nothing(vendor_account: VendorAccount) -> None:
    cost(vendor_account, DAY, "10.00")
    settle_vendor_account_day(vendor_account_id=vendor_account.pk, day=DAY)
    assert settle_vendor_account_day(vendor_account_id=vendor_account.pk, day=DAY) == 0
    cost(vendor_account, DAY, "10.75")
    settle_vendor_account_day(vendor_account_id=vendor_account.pk, day=DAY)
    consumption = LedgerTransaction.objects.filter(kind="consumption").order_by("id")
    amounts = [t.entries.get(account__key__startswith="vendor_consumption").amount for t in consumption]
    assert amounts == [Decimal("10.00"), Decimal("0.75")]
    cost(vendor_account, DAY, "10.00")  # restated back
    settle_vendor_account_day(vendor_account_id=vendor_account.pk, day=DAY)
    assert prepaid(vendor_account) == Decimal("-10.00")


def test_fx_conversion_at_the_days_rate_and_the_fee_with_a_vendor_override(db: Any) -> None:
    from billing.ledger.models import VendorFee
    from tests.factories import OrganizationFactory, VendorAccountFactory

    org = OrganizationFactory(currency="EUR", fee_percent=Decimal("5"))
    openai = VendorAccountFactory(organization=org, vendor="openai")
    anthropic = VendorAccountFactory(organization=org, vendor="anthropic")
    VendorFee.objects.create(organization=org, vendor="anthropic", percent=Decimal("2.5"))
    FxRate.objects.create(date=DAY, base="EUR", quote="USD", rate=Decimal("1.0500"), source="ecb")
    cost(openai, DAY, "21.00")
    cost(anthropic, DAY, "10.50")
    vendor_account_settle(vendor_account_id=openai.pk, day=DAY)
    vendor_account_settle(vendor_account_id=anthropic.pk, day=DAY)
    # 21.00 USD / 1.05 = 20.00 EUR + 5 % = 1.00; 10.50 USD = 10.00 EUR + 2.5 % = 0.25
    assert balance_of(key=accounts.receivable(org.pk, "EUR").key) == Decimal("31.25")
    assert balance_of(key=accounts.revenue_fees(org.pk, "EUR").key) == Decimal("-1.25")
    charge = LedgerTransaction.objects.filter(kind="customer_charge", vendor_account=openai).get()
    assert charge.metadata["rate"] == "0.9523809523809523809523809524"
    assert Decimal(charge.metadata["source_amount"]) == Decimal("21.00")


def test_a_missing_rate_fails_the_day_whole_with_advice(db: Any) -> None:
    from tests.factories import OrganizationFactory, VendorAccountFactory

    org = OrganizationFactory(currency="JPY")
    account = VendorAccountFactory(organization=org)
    cost(account, DAY, "5.00")
    result = settle_vendor_account(vendor_account_id=account.pk)
    assert result.errors and "USD" in result.errors[0] and "JPY" in result.errors[0]
    assert LedgerTransaction.objects.count() == 0
    account.refresh_from_db()
    assert account.settled_at is None


def test_wallet_mode_draws_the_wallet_down_and_beyond_into_overage(db: Any) -> None:
    from billing.ledger.selectors import wallet_runway
    from billing.ledger.services import wallet_top_up_credit
    from tests.factories import OrganizationFactory, VendorAccountFactory

    org = OrganizationFactory(
        currency="USD", billing_mode=Organization.BillingMode.PREPAID_WALLET, credit_limit=Decimal("50")
    )
    account = VendorAccountFactory(organization=org)
    wallet_top_up_credit(organization=org, amount=Decimal("30.00"), gateway="stripe", reference="pi_1", effective_at=T0)
    wallet_top_up_credit(organization=org, amount=Decimal("30.00"), gateway="stripe", reference="pi_1", effective_at=T0)
    cost(account, DAY, "42.50")
    settle_vendor_account(vendor_account_id=account.pk)
    wallet = wallet_runway(organization=org, today=DAY + timedelta(days=1))
    assert wallet.balance == Decimal("-12.50")
    assert balance_of(key=accounts.receivable(org.pk, "USD").key) == Decimal(0)


def test_expiry_posts_what_is_left_of_the_lot_once(vendor_account: VendorAccount) -> None:
    lot = credit_purchase_record(
        vendor_account=vendor_account,
        amount=Decimal("100"),
        currency="USD",
        kind="grant",
        effective_at=T0,
        expires_at=T0 + timedelta(days=30),
    )
    credit_purchase_record(
        vendor_account=vendor_account, amount=Decimal("50"), currency="USD", kind="purchase", effective_at=T0
    )
    cost(vendor_account, DAY, "30.00")
    settle_vendor_account_day(vendor_account_id=vendor_account.pk, day=DAY)
    now = T0 + timedelta(days=31)
    assert [p.pk for p in credits_expire_due(now=now)] == [lot.pk]
    assert credits_expire_due(now=now) == []
    lot.refresh_from_db()
    # The expiring grant is drawn first: 100 - 30 consumed = 70 expire; the 50 bought remain.
    assert lot.expired_amount == Decimal("70")
    assert prepaid(vendor_account) == Decimal("50")


def test_burn_rate_is_robust_to_one_spike_and_runway_gives_the_depletion_date() -> None:
    days = [Decimal(10)] * 13 + [Decimal(900)]
    assert burn_rate(days) == Decimal(10)
    result = runway(balance=Decimal("95"), currency="USD", burn=Decimal(10), today=date(2026, 11, 28))
    assert (result.runway_days, result.depletion_date) == (Decimal("9.5"), date(2026, 12, 7))
    idle = runway(balance=Decimal("95"), currency="USD", burn=Decimal(0), today=date(2026, 11, 28))
    assert (idle.runway_days, idle.depletion_date) == (None, None)


def test_balance_api_reports_balance_burn_and_runway(owner_client: APIClient, vendor_account: VendorAccount) -> None:
    from django.utils import timezone

    today = timezone.now().date()
    credit_purchase_record(
        vendor_account=vendor_account, amount=Decimal("1000"), currency="USD", kind="purchase", effective_at=T0
    )
    for i in range(1, 15):
        cost(vendor_account, today - timedelta(days=i), "20.00")
    settle_vendor_account(vendor_account_id=vendor_account.pk)
    body = owner_client.get(f"/api/v1/vendor-accounts/{vendor_account.pk}/balance/").json()
    assert body == {
        "balance": "720.0000000000",
        "currency": "USD",
        "burn_rate_per_day": "20.0000000000",
        "runway_days": "36.0",
        "depletion_date": str(today + timedelta(days=36)),
    }
    assert vendor_account_runway(vendor_account=vendor_account, today=today).runway_days == Decimal("36.0")


def test_wallet_api_reports_the_wallet(owner_client: APIClient, organization: Organization) -> None:
    body = owner_client.get("/api/v1/wallet/").json()
    assert body["balance"] == "0E-10" or body["balance"] == "0.0000000000"
    assert (body["currency"], body["billing_mode"], body["runway_days"]) == ("USD", "consolidated", None)


def test_reconciliation_flags_drift_beyond_the_tolerance(vendor_account: VendorAccount) -> None:
    from billing.ledger.reconciliation import vendor_account_reconcile
    from providers.models import BalanceObservation

    credit_purchase_record(
        vendor_account=vendor_account, amount=Decimal("100"), currency="USD", kind="purchase", effective_at=T0
    )
    for amount in ("99.50", "90.00"):
        BalanceObservation.objects.create(
            organization_id=vendor_account.organization_id,
            vendor_account=vendor_account,
            amount=Decimal(amount),
            currency="USD",
            observed_at=T0 + timedelta(days=1),
        )
    results = vendor_account_reconcile(vendor_account=vendor_account)
    assert [(r.drift, r.flagged) for r in results] == [(Decimal("-0.50"), False), (Decimal("-10.00"), True)]
    assert vendor_account_reconcile(vendor_account=vendor_account) == []


def test_balance_only_vendors_get_consumption_from_balance_changes_net_of_purchases(db: Any) -> None:
    from providers.models import BalanceObservation, CostRecord
    from tests.factories import VendorAccountFactory

    account = VendorAccountFactory(vendor="deepseek")
    FxRate.objects.create(date=T0.date(), base="EUR", quote="USD", rate=Decimal("1.05"), source="ecb")
    FxRate.objects.create(date=T0.date(), base="EUR", quote="CNY", rate=Decimal("7.50"), source="ecb")
    observe = lambda amount, day: BalanceObservation.objects.create(  # noqa: E731
        organization_id=account.organization_id,
        vendor_account=account,
        amount=Decimal(amount),
        currency="CNY",
        observed_at=T0 + timedelta(days=day),
    )
    observe("110.00", 0)
    observe("95.50", 1)
    credit_purchase_record(
        vendor_account=account,
        amount=Decimal("50"),
        currency="CNY",
        kind="purchase",
        effective_at=T0 + timedelta(days=1, hours=12),
    )
    observe("140.00", 2)
    vendor_account_settle(vendor_account_id=account.pk)
    spent = list(
        CostRecord.objects.filter(vendor_account=account)
        .order_by("charge_period_start")
        .values_list("billed_cost", flat=True)
    )
    assert spent == [Decimal("14.50"), Decimal("5.50")]
    assert prepaid(account, "CNY") == Decimal("30.00")


def test_settle_command_settles_and_reports(vendor_account: VendorAccount) -> None:
    from io import StringIO

    from django.core.management import CommandError, call_command

    cost(vendor_account, DAY, "3.00")
    out = StringIO()
    call_command("settle", org="acme", stdout=out)
    assert "acme / OpenAI: 1 day(s), 2 posting(s)" in out.getvalue()
    with pytest.raises(CommandError, match="not a date"):
        call_command("settle", date="tomorrow")
    assert CreditPurchase.objects.count() == 0


def test_deleting_an_account_with_history_disconnects_it_and_keeps_the_ledger(
    owner_client: APIClient, vendor_account: VendorAccount
) -> None:
    cost(vendor_account, DAY, "4.00")
    settle_vendor_account_day(vendor_account_id=vendor_account.pk, day=DAY)
    assert owner_client.delete(f"/api/v1/vendor-accounts/{vendor_account.pk}/").status_code == 204
    vendor_account.refresh_from_db()
    assert vendor_account.status == VendorAccount.Status.DISABLED
    assert vendor_account.credentials_masked == {}
    assert LedgerTransaction.objects.filter(vendor_account=vendor_account).count() == 2
    assert prepaid(vendor_account) == Decimal("-4.00")

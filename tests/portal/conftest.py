"""Portal test helpers: signed-in clients per role, and a data builder for query-count tests."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from aggregator.tenancy.models import Organization, Role, User
from billing.ledger import accounts as ledger_accounts
from billing.ledger.models import LedgerAccount, LedgerEntry, LedgerTransaction
from providers.models import CostRecord, SyncRun, VendorAccount
from tests.factories import (
    AlertFactory,
    MembershipFactory,
    TopUpFactory,
    TopUpRuleFactory,
    VendorAccountFactory,
)


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def as_owner(owner: User) -> Client:
    return signed_in(owner)


@pytest.fixture
def billing_admin(organization: Organization) -> User:
    return MembershipFactory(organization=organization, role=Role.BILLING_ADMIN, user__email="admin@acme.test").user


@pytest.fixture
def as_admin(billing_admin: User) -> Client:
    return signed_in(billing_admin)


@pytest.fixture
def as_viewer(viewer: User) -> Client:
    return signed_in(viewer)


def text(response: Any) -> str:
    return response.content.decode()


MODELS = ("gpt-4o", "gpt-4o-mini", "o3")
PROJECTS = ("proj_web", "proj_batch")


def build_history(organization: Organization, *, days: int, accounts: int = 10) -> list[VendorAccount]:
    """``accounts`` vendor accounts with ``days`` days of cost records, sync runs and ledger
    postings (consumption and customer charges), written with bulk inserts, plus one top-up rule,
    top-up and open alert per account: everything the portal pages read."""
    today = timezone.now().date()
    created = [
        VendorAccountFactory(organization=organization, vendor="openai", label=f"OpenAI {i}") for i in range(accounts)
    ]
    records, runs, transactions = [], [], []
    now = datetime.now(UTC)
    for account in created:
        for d in range(1, days + 1):
            day = today - timedelta(days=d)
            start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
            for m, model in enumerate(MODELS):
                records.append(
                    CostRecord(
                        organization=organization,
                        vendor_account=account,
                        vendor=account.vendor,
                        source_key=f"{day}:{model}",
                        charge_period_start=start,
                        charge_period_end=start + timedelta(days=1),
                        service_name=model,
                        project=PROJECTS[m % 2],
                        billed_cost=Decimal("1.25"),
                        billing_currency="USD",
                        updated_at=now,
                    )
                )
            runs.append(
                SyncRun(
                    organization=organization,
                    vendor_account=account,
                    status=SyncRun.Status.SUCCEEDED,
                    window_start=start,
                    window_end=start + timedelta(days=1),
                )
            )
            transactions.append((account, day, Decimal("3.75")))
    CostRecord.objects.bulk_create(records, batch_size=2000)
    SyncRun.objects.bulk_create(runs, batch_size=2000)
    _post_bulk(organization, transactions)
    for account in created:
        rule = TopUpRuleFactory(organization=organization, vendor_account=account)
        TopUpFactory(organization=organization, rule=rule, status="failed", last_decline_code="card_declined")
        AlertFactory(organization=organization, vendor_account=account, subject=f"va:{account.pk}")
    return created


def _post_bulk(organization: Organization, postings: list[tuple[VendorAccount, date, Decimal]]) -> None:
    """Consumption and customer charges as the daily settlement posts them, inserted in bulk."""
    specs: dict[str, ledger_accounts.AccountSpec] = {}
    rows: list[tuple[LedgerTransaction, list[tuple[str, Decimal]]]] = []
    for account, day, amount in postings:
        prepaid = ledger_accounts.vendor_prepaid(account.pk, organization.pk, "USD")
        consumed = ledger_accounts.vendor_consumption(account.pk, organization.pk, "USD")
        receivable = ledger_accounts.receivable(organization.pk, organization.currency)
        revenue = ledger_accounts.revenue_consumption(organization.pk, organization.currency)
        for spec in (prepaid, consumed, receivable, revenue):
            specs[spec.key] = spec
        at = datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=23)
        rows.append(
            (
                LedgerTransaction(
                    kind=LedgerTransaction.Kind.CONSUMPTION,
                    idempotency_key=f"test:c:{account.pk}:{day}",
                    organization=organization,
                    vendor_account=account,
                    effective_at=at,
                    settlement_day=day,
                ),
                [(consumed.key, amount), (prepaid.key, -amount)],
            )
        )
        rows.append(
            (
                LedgerTransaction(
                    kind=LedgerTransaction.Kind.CUSTOMER_CHARGE,
                    idempotency_key=f"test:ch:{account.pk}:{day}",
                    organization=organization,
                    vendor_account=account,
                    effective_at=at,
                    settlement_day=day,
                ),
                [(receivable.key, amount), (revenue.key, -amount)],
            )
        )
    ledgers = {}
    for key, spec in specs.items():
        ledgers[key] = LedgerAccount.objects.create(
            key=key,
            kind=spec.kind,
            currency=spec.currency,
            organization_id=spec.organization_id,
            vendor_account_id=spec.vendor_account_id,
        )
    LedgerTransaction.objects.bulk_create([t for t, _ in rows], batch_size=2000)
    entries, balances = [], dict.fromkeys(ledgers, Decimal(0))
    for tx, lines in rows:
        for key, amount in lines:
            entries.append(
                LedgerEntry(
                    transaction=tx, account=ledgers[key], amount=amount, currency="USD", effective_at=tx.effective_at
                )
            )
            balances[key] += amount
    LedgerEntry.objects.bulk_create(entries, batch_size=2000)
    for key, balance in balances.items():
        LedgerAccount.objects.filter(key=key).update(balance=balance)

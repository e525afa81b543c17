"""Portal test helpers: signed-in clients per role, and a data builder for query-count tests."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from aggregator.tenancy.models import Organization, Role, User
from billing.invoicing.models import Invoice, InvoiceLine
from billing.ledger import accounts as ledger_accounts
from billing.ledger.models import CreditPurchase, LedgerAccount, LedgerEntry, LedgerTransaction
from billing.payments.models import PaymentMethod
from billing.payments.records import Payment
from providers.models import CostRecord, SyncRun, VendorAccount
from tests.factories import (
    AlertFactory,
    IssuerFactory,
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
    top-up and open alert per account: everything the portal pages read.

    Per month of history (at least one): a credit purchase per account, a saved card, and the
    month's invoice with three lines per account, paid in full after a declined attempt; the newest
    invoice is open, with a partial payment and a declined attempt (what the pay page shows)."""
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
    months = _months(today, max(1, days // 30))
    purchases = [(account, month, Decimal("100.00")) for month in months for account in created]
    _post_bulk(organization, transactions, purchases)
    _invoices(organization, created, months)
    PaymentMethod.objects.bulk_create(
        PaymentMethod(organization=organization, gateway="fake", gateway_reference=f"pm_history_{organization.pk}_{i}",
                      customer_reference=f"cus_history_{organization.pk}", brand="visa", last4=f"{i:04d}",
                      exp_month=12, exp_year=2030, is_default=i == 0, is_fallback=i == 1)
        for i in range(len(months))
    )  # fmt: skip
    for account in created:
        rule = TopUpRuleFactory(organization=organization, vendor_account=account)
        TopUpFactory(organization=organization, rule=rule, status="failed", last_decline_code="card_declined")
        AlertFactory(organization=organization, vendor_account=account, subject=f"va:{account.pk}")
    return created


def _months(today: date, count: int) -> list[date]:
    """The first days of the ``count`` months before ``today``'s, oldest first."""
    first, months = today.replace(day=1), []
    for _ in range(count):
        first = (first - timedelta(days=1)).replace(day=1)
        months.append(first)
    return months[::-1]


def _invoices(organization: Organization, accounts: list[VendorAccount], months: list[date]) -> None:
    """A finalized invoice per month, three lines per account: paid after a declined attempt, but
    the newest, open with a partial payment and a declined attempt."""
    issuer = IssuerFactory()
    line_amount, per_account = Decimal("12.50"), len(MODELS)
    total = line_amount * per_account * len(accounts)
    invoices = []
    for i, first in enumerate(months):
        last = (first + timedelta(days=32)).replace(day=1) - timedelta(days=1)
        newest = i == len(months) - 1
        invoices.append(
            Invoice(
                organization=organization, issuer=issuer, number=f"INV-{organization.pk}-{i + 1:06d}",
                status=Invoice.Status.OPEN if newest else Invoice.Status.PAID, period_start=first, period_end=last,
                currency=organization.currency, billing_mode="consolidated", issue_date=last + timedelta(days=1),
                due_date=last + timedelta(days=15), subtotal=total, total=total, amount_due=total,
                amount_paid=Decimal("50.00") if newest else total,
            )
        )  # fmt: skip
    Invoice.objects.bulk_create(invoices)
    lines: list[InvoiceLine] = []
    payments: list[Payment] = []
    for invoice in invoices:
        for account in accounts:
            for model in MODELS:
                lines.append(
                    InvoiceLine(
                        invoice=invoice, vendor=account.vendor, vendor_label=account.label, description=model,
                        amount=line_amount, position=len(lines),
                    )
                )  # fmt: skip
        paid = invoice.amount_paid
        for status, amount in ((Payment.Status.FAILED, invoice.total), (Payment.Status.SUCCEEDED, paid)):
            payments.append(
                Payment(
                    organization=organization, invoice=invoice, gateway="stripe", status=status, amount=amount,
                    currency=invoice.currency, gateway_reference=f"pi_history_{invoice.pk}_{status}",
                    idempotency_key=f"invoice:{invoice.pk}:history:{status}",
                    failure_code="card_declined" if status == Payment.Status.FAILED else "",
                )
            )  # fmt: skip
    InvoiceLine.objects.bulk_create(lines, batch_size=2000)
    Payment.objects.bulk_create(payments, batch_size=2000)


def _post_bulk(
    organization: Organization,
    postings: list[tuple[VendorAccount, date, Decimal]],
    purchases: Sequence[tuple[VendorAccount, date, Decimal]] = (),
) -> None:
    """Consumption and customer charges as the daily settlement posts them, and credit purchases as
    ``credit_purchase_record`` posts them, inserted in bulk."""
    specs: dict[str, ledger_accounts.AccountSpec] = {}
    rows: list[tuple[LedgerTransaction, list[tuple[str, Decimal]]]] = []
    bought: list[CreditPurchase] = []
    for account, day, amount in purchases:
        prepaid = ledger_accounts.vendor_prepaid(account.pk, organization.pk, "USD")
        funding = ledger_accounts.vendor_funding(account.pk, organization.pk, "USD")
        specs[prepaid.key], specs[funding.key] = prepaid, funding
        at = datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=9)
        tx = LedgerTransaction(
            kind=LedgerTransaction.Kind.PURCHASE,
            idempotency_key=f"test:p:{account.pk}:{day}",
            organization=organization,
            vendor_account=account,
            effective_at=at,
        )
        rows.append((tx, [(prepaid.key, amount), (funding.key, -amount)]))
        bought.append(
            CreditPurchase(
                organization=organization, vendor_account=account, kind=CreditPurchase.Kind.PURCHASE, amount=amount,
                currency="USD", effective_at=at, note=f"Prepaid {day:%Y-%m}", transaction=tx,
            )
        )  # fmt: skip
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
    for purchase in bought:
        purchase.transaction_id = purchase.transaction.pk
    CreditPurchase.objects.bulk_create(bought, batch_size=2000)
    for key, balance in balances.items():
        LedgerAccount.objects.filter(key=key).update(balance=balance)

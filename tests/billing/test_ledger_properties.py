"""Property and crash-safety tests of settlement: whatever the order, repetition or interruption,
the ledger balances and each vendor balance = purchases + grants - expired - latest costs."""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.db.models import Sum
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.ledger import accounts
from billing.ledger.models import CreditPurchase, LedgerEntry, LedgerTransaction
from billing.ledger.posting import storage_amount
from billing.ledger.selectors import balance_of
from billing.ledger.services import credit_purchase_record, credits_expire_due
from billing.ledger.settlement import settle_vendor_account, settle_vendor_account_day
from providers.models import CostRecord, VendorAccount
from tests.billing.conftest import cost
from tests.factories import VendorAccountFactory

T0 = datetime(2026, 11, 1, tzinfo=UTC)
EXAMPLES = int(os.environ.get("LEDGER_EXAMPLES", "30"))  # raise it for a deeper search
DAYS = [date(2026, 11, 1) + timedelta(days=i) for i in range(4)]

amounts = st.decimals(min_value=Decimal("0"), max_value=Decimal("500"), places=4)
actions = st.lists(
    st.one_of(
        st.tuples(st.just("cost"), st.sampled_from(DAYS), st.sampled_from(["a", "b"]), amounts),
        st.tuples(
            st.just("purchase"),
            st.sampled_from(DAYS),
            st.sampled_from(["purchase", "grant"]),
            amounts.filter(lambda a: a > 0),
        ),
        st.tuples(st.just("settle_day"), st.sampled_from(DAYS)),
        st.tuples(st.just("settle_changed")),
        st.tuples(st.just("expire"), st.integers(min_value=0, max_value=10)),
    ),
    min_size=1,
    max_size=25,
)


def assert_ledger_balances(account: VendorAccount) -> None:
    for tx in LedgerTransaction.objects.filter(organization_id=account.organization_id).prefetch_related("entries"):
        totals: dict[str, Decimal] = defaultdict(Decimal)
        for entry in tx.entries.all():
            totals[entry.currency] += entry.amount
        assert all(t == 0 for t in totals.values()), (tx.idempotency_key, dict(totals))
    # Every running balance equals the sum of its entries.
    for key, running, summed in accounts_with_entries(account.organization_id):
        assert running == summed, key


def accounts_with_entries(organization_id: int) -> list[tuple[str, Decimal, Decimal]]:
    from billing.ledger.models import LedgerAccount

    owned = LedgerAccount.objects.filter(organization_id=organization_id)
    sums = dict(LedgerEntry.objects.filter(account__in=owned).values_list("account_id").annotate(total=Sum("amount")))
    return [(a.key, Decimal(a.balance), storage_amount(Decimal(sums.get(a.pk, 0)))) for a in owned]


def expected_vendor_balance(account: VendorAccount) -> Decimal:
    bought = sum((p.amount for p in CreditPurchase.objects.filter(vendor_account=account)), Decimal(0))
    expired = sum((p.expired_amount or 0 for p in CreditPurchase.objects.filter(vendor_account=account)), Decimal(0))
    costs = CostRecord.objects.filter(vendor_account=account).aggregate(total=Sum("billed_cost"))["total"] or 0
    return storage_amount(bought - expired - Decimal(costs))


@settings(
    max_examples=int(__import__("os").environ.get("LEDGER_EXAMPLES", "30")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=actions)
def test_any_sequence_keeps_the_ledger_balanced_and_the_vendor_balance_right(
    db: Any, steps: list[tuple[Any, ...]]
) -> None:
    account = VendorAccountFactory()
    for step in steps:
        if step[0] == "cost":
            cost(account, step[1], str(step[3]), key=f"{step[1]}:{step[2]}")
        elif step[0] == "purchase":
            effective = datetime.combine(step[1], datetime.min.time(), tzinfo=UTC)
            credit_purchase_record(
                vendor_account=account,
                amount=step[3],
                currency="USD",
                kind=step[2],
                effective_at=effective,
                expires_at=effective + timedelta(days=2),
            )
        elif step[0] == "settle_day":
            settle_vendor_account_day(vendor_account_id=account.pk, day=step[1])
        elif step[0] == "settle_changed":
            settle_vendor_account(vendor_account_id=account.pk)
        else:
            credits_expire_due(now=T0 + timedelta(days=step[1]), vendor_account=account)
    # Settle everything once more (a duplicate run), then check.
    for day in DAYS:
        settle_vendor_account_day(vendor_account_id=account.pk, day=day)
        settle_vendor_account_day(vendor_account_id=account.pk, day=day)
    assert_ledger_balances(account)
    prepaid = balance_of(key=accounts.vendor_prepaid(account.pk, account.organization_id, "USD").key)
    assert prepaid == expected_vendor_balance(account)


def _ledger_snapshot() -> list[tuple[str, str, Decimal]]:
    return sorted(
        (e.transaction.idempotency_key, e.account.key.split(":")[0], Decimal(e.amount))
        for e in LedgerEntry.objects.select_related("transaction", "account")
    )


def test_a_settlement_that_dies_midway_and_is_rerun_equals_one_clean_run(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from billing.ledger import settlement

    account = VendorAccountFactory()
    for i, day in enumerate(DAYS):
        cost(account, day, f"{10 + i}.25")
    original = settlement.ledger_post_many
    calls = {"n": 0}

    def dying_post(**kwargs: Any) -> Any:
        calls["n"] += 1
        posted = original(**kwargs)
        if calls["n"] == 1:  # the days' postings are written, their transaction is not committed yet
            raise RuntimeError("worker killed")
        return posted

    monkeypatch.setattr(settlement, "ledger_post_many", dying_post)
    with pytest.raises(RuntimeError):
        settle_vendor_account(vendor_account_id=account.pk)
    monkeypatch.setattr(settlement, "ledger_post_many", original)
    assert LedgerTransaction.objects.filter(settlement_day=DAYS[1]).count() == 0  # day 2 rolled back whole
    settle_vendor_account(vendor_account_id=account.pk)
    crashed = _ledger_snapshot()

    clean_account = VendorAccountFactory(organization=account.organization)
    for i, day in enumerate(DAYS):
        cost(clean_account, day, f"{10 + i}.25")
    settle_vendor_account(vendor_account_id=clean_account.pk)
    clean = [
        (k.replace(f":{clean_account.pk}:", f":{account.pk}:"), a, amt)
        for k, a, amt in _ledger_snapshot()
        if f":{clean_account.pk}:" in k
    ]
    assert [row for row in crashed if f":{account.pk}:" in row[0]] == sorted(clean)


@pytest.mark.django_db(transaction=True)
def test_two_workers_settling_the_same_account_at_once_post_once() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers need PostgreSQL (SQLite serializes whole transactions)")
    account = VendorAccountFactory()
    cost(account, DAYS[0], "42.00")
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def worker() -> None:
        from django.db import connection as thread_connection

        try:
            barrier.wait()
            settle_vendor_account_day(vendor_account_id=account.pk, day=DAYS[0])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            thread_connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert LedgerTransaction.objects.filter(kind="consumption").count() == 1
    assert balance_of(key=accounts.vendor_prepaid(account.pk, account.organization_id, "USD").key) == Decimal("-42.00")

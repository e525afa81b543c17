"""Workers racing to charge the same automatic top-up, over real HTTP against localstripe.

The task that charges a top-up can run twice at once (a redelivered message, the periodic sweep and
the evaluation's own task). localstripe ignores idempotency keys (payments.md §2.1, gap 3), so only
our attempt row and its lease stand between two workers and two PaymentIntents: this checks them.
PostgreSQL only: SQLite serializes writers on one file lock, so threads cannot race there.
"""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
import stripe
from django.db import connection

from billing.ledger.models import LedgerTransaction
from billing.ledger.services import credit_purchase_record
from billing.payments.gateways import FAKE_GATEWAY
from billing.payments.models import PaymentMethod
from billing.topups.models import TopUp, TopUpAttempt
from billing.topups.services import top_up_charge, top_up_rules_evaluate
from tests.billing import localstripe as localstripe_fixtures
from tests.billing.localstripe import SECRET_KEY, LocalStripe
from tests.factories import TopUpRuleFactory, VendorAccountFactory

localstripe_server = localstripe_fixtures.localstripe_server
localstripe = localstripe_fixtures.localstripe

VISA = "4242424242424242"
WORKERS = 6
TODAY = date(2026, 11, 20)


@pytest.fixture(autouse=True)
def stripe_settings(settings: Any, localstripe: LocalStripe) -> None:
    settings.PAYMENT_GATEWAYS = [FAKE_GATEWAY, "billing.payments.gateways.stripe.StripeGateway"]
    settings.STRIPE_SECRET_KEY = SECRET_KEY
    settings.STRIPE_PUBLISHABLE_KEY = "pk_test_FAKE_localstripe_0000"
    settings.STRIPE_WEBHOOK_SECRET = "whsec_FAKE_race_0000"
    settings.STRIPE_API_BASE = localstripe.url
    settings.STRIPE_MAX_NETWORK_RETRIES = 0


def open_stripe_top_up(api: stripe.StripeClient) -> TopUp:
    """An automatic top-up of 500.00 USD due now, charged to a saved Visa at localstripe."""
    account = VendorAccountFactory(vendor="openai", label="OpenAI prod")
    customer = api.v1.customers.create(params={"email": "billing@acme.test"})
    method = api.v1.payment_methods.create(
        params={"type": "card", "card": {"number": VISA, "exp_month": 12, "exp_year": 2030, "cvc": "123"}}
    )
    api.v1.payment_methods.attach(method.id, params={"customer": customer.id})
    saved = PaymentMethod.objects.create(organization=account.organization, gateway="stripe", kind="card",
                                         gateway_reference=method.id, customer_reference=customer.id, brand="visa",
                                         last4="4242", exp_month=12, exp_year=2030)  # fmt: skip
    TopUpRuleFactory(organization=account.organization, vendor_account=account, primary_method=saved)
    credit_purchase_record(vendor_account=account, amount=Decimal("80.00"), currency="USD", kind="purchase",
                           effective_at=datetime(2026, 11, 1, tzinfo=UTC))  # fmt: skip
    (top_up,) = top_up_rules_evaluate(vendor_account=account, today=TODAY)
    return top_up


@pytest.mark.django_db(transaction=True)
def test_workers_racing_to_charge_one_top_up_make_one_payment_intent_and_one_credit(
    localstripe: LocalStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("SQLite serializes writers on one file lock, so threads cannot race; run on PostgreSQL")
    from billing.topups import tasks

    # The evaluation queues the charge after commit; here the racing workers make it instead.
    monkeypatch.setattr(tasks.top_up_charge_task, "delay_on_commit", lambda *args, **kwargs: None)
    api = stripe.StripeClient(SECRET_KEY, base_addresses={"api": localstripe.url}, max_network_retries=0)
    top_up = open_stripe_top_up(api)
    assert (top_up.status, top_up.attempt_count) == ("pending", 0)
    start, seen, errors = threading.Barrier(WORKERS), [], []

    def worker() -> None:
        try:
            start.wait()
            seen.append(top_up_charge(top_up_id=top_up.pk).status)  # each thread has its own connection
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(seen) == WORKERS and set(seen) <= {"processing", "succeeded"}  # losers saw the winner's lease
    intents = api.v1.payment_intents.list(params={"limit": 100}).data  # localstripe was emptied for this test
    assert [(pi.amount, pi.currency, pi.status, pi.metadata["top_up"]) for pi in intents] == [
        (50000, "usd", "succeeded", str(top_up.pk))]  # fmt: skip
    (attempt,) = TopUpAttempt.objects.filter(top_up=top_up)
    assert (attempt.number, attempt.outcome, attempt.gateway_reference) == (1, "succeeded", intents[0].id)
    assert attempt.idempotency_key == f"topup:{top_up.pk}:attempt:1"
    top_up.refresh_from_db()
    assert (top_up.status, top_up.attempt_count, top_up.gateway_reference) == ("succeeded", 1, intents[0].id)
    (credit,) = LedgerTransaction.objects.filter(kind="vendor_topup")
    assert credit.entries.get(amount__gt=0).amount == Decimal("500.00")
    assert credit.entries.get(amount__lt=0).amount == Decimal("-500.00")
    assert credit.metadata == {"top_up": top_up.pk, "gateway": "stripe", "gateway_reference": intents[0].id}

"""Period close, numbering, tax and the lifecycle of invoices."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from aggregator.tenancy.models import AuditEvent, Issuer, Organization
from billing.fx.models import FxRate
from billing.invoicing.close import invoice_draft_build, period_close
from billing.invoicing.models import Invoice, InvoiceImmutable, InvoiceLine
from billing.invoicing.services import (
    InvoiceError,
    credit_note_issue,
    invoice_finalize,
    invoice_line_add,
    invoice_payment_record,
    invoice_void,
)
from billing.invoicing.tax import tax_by_rate, tax_decision
from billing.ledger.services import wallet_top_up_credit
from tests.billing.conftest import cost
from tests.factories import IssuerFactory, OrganizationFactory, VendorAccountFactory

OCT = [date(2026, 10, d) for d in (3, 17, 31)]


@pytest.fixture
def issuer(db: Any) -> Issuer:
    return IssuerFactory(name="Operator GmbH", country="DE", is_default=True)


def _org_with_usage(**org: Any) -> tuple[Organization, Any, Any]:
    organization = OrganizationFactory(**org)
    openai = VendorAccountFactory(organization=organization, vendor="openai", label="OpenAI")
    anthropic = VendorAccountFactory(organization=organization, vendor="anthropic", label="Claude")
    for day in OCT:
        cost(openai, day, "10.005", key=f"o:{day}")
        cost(anthropic, day, "3.333333", key=f"a:{day}")
    cost(openai, date(2026, 11, 1), "99.00", key="november")  # next period: not on October's invoice
    return organization, openai, anthropic


def test_close_builds_one_invoice_grouped_by_vendor_and_model_with_the_fee(issuer: Issuer) -> None:
    organization, *_ = _org_with_usage(fee_percent=Decimal("10"))
    invoice = period_close(organization=organization, period="2026-10")
    assert invoice.status == Invoice.Status.OPEN
    assert invoice.number == "INV-2026-000001"
    lines = [(line.vendor_label, line.kind, line.amount) for line in invoice.lines.order_by("position")]
    # OpenAI 3 × 10.005 = 30.015 → 30.02; fee 3.0015 → 3.00; Claude 3 × 3.333333 = 9.999999 → 10.00; fee 1.00
    assert lines == [
        ("Claude", "usage", Decimal("10.00")),
        ("Claude", "fee", Decimal("1.00")),
        ("OpenAI", "usage", Decimal("30.02")),
        ("OpenAI", "fee", Decimal("3.00")),
    ]
    assert (invoice.subtotal, invoice.tax_total, invoice.total, invoice.amount_due) == (
        Decimal("44.02"),
        Decimal("0"),
        Decimal("44.02"),
        Decimal("44.02"),
    )
    assert invoice.lines.get(vendor="openai", kind="usage").original_amount == Decimal("30.015")
    assert period_close(organization=organization, period="2026-10").pk == invoice.pk  # closing again: same invoice


def test_invoice_currency_lines_show_the_original_amount_and_rate(issuer: Issuer) -> None:
    organization, *_ = _org_with_usage(currency="EUR")
    for day in OCT:
        FxRate.objects.create(date=day, base="EUR", quote="USD", rate=Decimal("1.25"), source="ecb")
    invoice = period_close(organization=organization, period="2026-10")
    line = invoice.lines.get(vendor="openai")
    assert (line.original_amount, line.original_currency, line.rate, line.amount) == (
        Decimal("30.015"),
        "USD",
        Decimal("0.800000000000"),
        Decimal("24.01"),
    )


def test_eu_vat_reverse_charge_for_a_valid_b2b_vat_id_abroad(db: Any) -> None:
    IssuerFactory(country="DE", is_default=True, tax_regime="eu_vat", vat_id="DE136695976")
    organization, *_ = _org_with_usage(country="FR", tax_id="FR40303265045")
    invoice = period_close(organization=organization, period="2026-10")
    assert invoice.tax_total == Decimal(0)
    assert "Reverse charge" in invoice.tax_note
    b2c, *_ = _org_with_usage(country="FR", tax_id="")
    # A USD invoice also states the French consumer's VAT in euros (Art. 230), at the day's rate.
    FxRate.objects.create(date=timezone.now().date(), base="USD", quote="EUR", rate=Decimal("0.95"), source="manual")
    taxed = period_close(organization=b2c, period="2026-10")
    assert taxed.tax_breakdown == [
        {
            "rate": "20",
            "base": "40.02",
            "tax": "8.00",
            "tax_national": "7.60",
            "national_rate": "0.95",
            "national_currency": "EUR",
        }
    ]
    assert taxed.total == Decimal("48.02")


def test_japanese_tax_is_rounded_once_per_rate_not_per_line() -> None:
    lines = [(Decimal("105"), Decimal(10))] * 3
    (line,) = tax_by_rate(lines=lines, currency="JPY", rounding="ROUND_DOWN")
    assert (line.base, line.tax) == (Decimal("315"), Decimal("31"))  # per line it would be 3 × 10 = 30


def test_a_japanese_qualified_invoice_states_the_tax_in_yen(db: Any) -> None:
    IssuerFactory(country="JP", is_default=True, tax_regime="jp_consumption", jp_registration_number="T1234567890123")
    organization, *_ = _org_with_usage(currency="USD", locale="ja")
    FxRate.objects.create(date=date(2026, 11, 2), base="USD", quote="JPY", rate=Decimal("150"), source="manual")
    Organization.objects.filter(pk=organization.pk).update(invoice_review_days=1)
    draft = period_close(organization=Organization.objects.get(pk=organization.pk), period="2026-10")
    invoice = invoice_finalize(invoice_id=draft.pk, on=date(2026, 11, 2))
    assert invoice.tax_breakdown == [
        {"rate": "10", "base": "40.02", "tax": "4.00", "tax_jpy": "600", "jpy_rate": "150"}
    ]
    assert invoice.total == Decimal("44.02")


def test_a_japanese_issuer_without_registration_number_cannot_finalize(db: Any) -> None:
    IssuerFactory(country="JP", is_default=True, tax_regime="jp_consumption")
    organization, *_ = _org_with_usage(currency="JPY")
    draft = invoice_draft_build(organization=organization, period="2026-10")
    with pytest.raises(InvoiceError, match="registration number"):
        invoice_finalize(invoice_id=draft.pk)
    assert Invoice.objects.get(pk=draft.pk).number is None


amounts = st.decimals(min_value=Decimal("-500"), max_value=Decimal("100000"), places=2)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    currency=st.sampled_from(["JPY", "USD", "EUR", "KWD"]),
    rows=st.lists(
        st.tuples(amounts, st.sampled_from([Decimal(0), Decimal(8), Decimal(10), Decimal(20)])), min_size=1, max_size=12
    ),
)
def test_total_is_the_sum_of_rounded_lines_plus_tax_once_per_rate(db: Any, currency: str, rows: list[Any]) -> None:
    from aggregator.money import quantize

    issuer = IssuerFactory()
    organization = OrganizationFactory(currency=currency, issuer=issuer)
    invoice = Invoice.objects.create(
        organization=organization,
        issuer=issuer,
        period_start=date(2026, 10, 1),
        period_end=date(2026, 10, 31),
        currency=currency,
        billing_mode="consolidated",
    )
    for i, (amount, rate) in enumerate(rows):
        InvoiceLine.objects.create(
            invoice=invoice,
            description=f"line {i}",
            tax_rate=rate,
            amount=quantize(amount, currency, rounding="ROUND_HALF_UP"),
        )
    invoice = invoice_finalize(invoice_id=invoice.pk)
    lines = list(invoice.lines.all())
    expected_tax = Decimal(0)
    for rate in {line.tax_rate for line in lines}:
        base = sum((line.amount for line in lines if line.tax_rate == rate), Decimal(0))
        expected_tax += quantize(base * rate / 100, currency, rounding="ROUND_HALF_UP")
    assert invoice.subtotal == sum((line.amount for line in lines), Decimal(0))
    assert invoice.total == invoice.subtotal + expected_tax
    assert invoice.tax_total == expected_tax


def test_a_finalized_invoice_cannot_change(issuer: Issuer, owner_client: APIClient) -> None:
    organization, *_ = _org_with_usage()
    invoice = period_close(organization=organization, period="2026-10")
    invoice.total = Decimal("1.00")
    with pytest.raises(InvoiceImmutable):
        invoice.save()
    line = invoice.lines.first()
    assert line is not None
    line.amount = Decimal(0)
    with pytest.raises(InvoiceImmutable):
        line.save()
    with pytest.raises(InvoiceImmutable):
        line.delete()
    with pytest.raises(InvoiceImmutable):
        Invoice.objects.get(pk=invoice.pk).delete()
    with pytest.raises(InvoiceError, match="credit note"):
        invoice_line_add(invoice=Invoice.objects.get(pk=invoice.pk), description="x", amount=Decimal(1))
    stored = Invoice.objects.get(pk=invoice.pk)
    assert (stored.total, stored.lines.count()) == (Decimal("40.02"), 2)


def test_void_keeps_the_number_and_the_next_invoice_takes_the_next_one(issuer: Issuer) -> None:
    first, *_ = _org_with_usage()
    second, *_ = _org_with_usage()
    a = period_close(organization=first, period="2026-10")
    invoice_void(invoice_id=a.pk)
    b = period_close(organization=second, period="2026-10")
    assert (Invoice.objects.get(pk=a.pk).status, Invoice.objects.get(pk=a.pk).number) == ("void", "INV-2026-000001")
    assert b.number == "INV-2026-000002"


def test_partial_payments_add_up_to_paid(issuer: Issuer) -> None:
    organization, *_ = _org_with_usage()
    invoice = period_close(organization=organization, period="2026-10")
    assert invoice_payment_record(invoice_id=invoice.pk, amount=Decimal("20.00")).status == "partially_paid"
    paid = invoice_payment_record(invoice_id=invoice.pk, amount=Decimal("20.02"))
    assert (paid.status, paid.amount_paid) == ("paid", Decimal("40.02"))
    # Each payment is in the audit log, with the balance before and after.
    trail = [
        (e.before["status"], e.after["status"], Decimal(e.after["amount"]), Decimal(e.after["balance_due"]))
        for e in AuditEvent.objects.filter(action="invoice.payment", object_id=str(invoice.pk)).order_by("id")
    ]
    assert trail == [
        ("open", "partially_paid", Decimal("20.00"), Decimal("20.02")),
        ("partially_paid", "paid", Decimal("20.02"), Decimal("0")),
    ]


@pytest.mark.django_db(transaction=True)
def test_a_payment_is_recorded_in_its_own_transaction_when_the_caller_has_none(issuer: Issuer) -> None:
    # The webhook task and the PayPal return call it in autocommit: its row lock needs its own transaction.
    organization, *_ = _org_with_usage()
    invoice = period_close(organization=organization, period="2026-10")
    paid = invoice_payment_record(invoice_id=invoice.pk, amount=Decimal("40.02"))
    assert (paid.status, Invoice.objects.get(pk=invoice.pk).amount_paid) == ("paid", Decimal("40.02"))
    note = credit_note_issue(invoice_id=invoice.pk, amount=Decimal("10.00"), reason="Rate correction", refund=False)
    assert (note.refund_amount, Invoice.objects.get(pk=invoice.pk).amount_credited) == (Decimal("0"), Decimal("10.00"))


def test_credit_notes_have_their_own_series_and_cannot_exceed_the_invoice(issuer: Issuer) -> None:
    organization, *_ = _org_with_usage()
    invoice = period_close(organization=organization, period="2026-10")
    note = credit_note_issue(invoice_id=invoice.pk, amount=Decimal("10.00"), reason="Duplicate charge on 3 Oct")
    assert note.number == "CN-2026-000001"
    with pytest.raises(InvoiceError, match=r"at most the uncredited 30\.02"):
        credit_note_issue(invoice_id=invoice.pk, amount=Decimal("30.03"), reason="too much")
    invoice.refresh_from_db()
    # Nothing was paid: the credit lowers what is owed, and nothing is to be refunded.
    assert (invoice.status, invoice.amount_credited, invoice.balance_due, note.refund_amount) == (
        "open", Decimal("10.00"), Decimal("30.02"), Decimal("0"))  # fmt: skip
    assert invoice_payment_record(invoice_id=invoice.pk, amount=Decimal("30.02")).status == "paid"


def test_a_credit_note_on_a_paid_invoice_owes_a_refund_of_the_overpaid_part(issuer: Issuer) -> None:
    organization, *_ = _org_with_usage()
    invoice = period_close(organization=organization, period="2026-10")
    invoice_payment_record(invoice_id=invoice.pk, amount=Decimal("35.02"))  # 5.00 still owed
    note = credit_note_issue(invoice_id=invoice.pk, amount=Decimal("8.00"), reason="Rate correction", refund=True)
    assert note.refund_amount == Decimal("3.00")  # 8.00 credited, of which 5.00 was never paid
    kept = credit_note_issue(invoice_id=invoice.pk, amount=Decimal("2.00"), reason="Goodwill", refund=False)
    assert kept.refund_amount == Decimal("0")
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_credited, invoice.balance_due) == (
        "paid",
        Decimal("10.00"),
        Decimal("-5.00"),
    )


def test_a_wallet_customer_without_overage_gets_a_statement_with_nothing_to_pay(issuer: Issuer) -> None:
    organization, *_ = _org_with_usage(billing_mode=Organization.BillingMode.PREPAID_WALLET)
    wallet_top_up_credit(
        organization=organization,
        amount=Decimal("100"),
        gateway="stripe",
        reference="pi_w",
        effective_at=datetime(2026, 9, 30, tzinfo=UTC),
    )
    invoice = period_close(organization=organization, period="2026-10")
    assert (invoice.total, invoice.wallet_credit_applied, invoice.amount_due, invoice.status) == (
        Decimal("40.02"),
        Decimal("40.02"),
        Decimal("0"),
        Invoice.Status.PAID,
    )


def test_a_wallet_customer_with_overage_is_invoiced_the_overage(issuer: Issuer) -> None:
    organization, *_ = _org_with_usage(billing_mode=Organization.BillingMode.PREPAID_WALLET)
    wallet_top_up_credit(
        organization=organization,
        amount=Decimal("30"),
        gateway="stripe",
        reference="pi_w",
        effective_at=datetime(2026, 9, 30, tzinfo=UTC),
    )
    invoice = period_close(organization=organization, period="2026-10")
    assert (invoice.wallet_credit_applied, invoice.amount_due) == (Decimal("30.00"), Decimal("10.02"))


def test_a_review_period_keeps_the_draft_until_the_operator_finalizes(issuer: Issuer, owner_client: APIClient) -> None:
    organization, *_ = _org_with_usage(invoice_review_days=3)
    draft = period_close(organization=organization, period="2026-10")
    assert (draft.status, draft.number) == ("draft", None)
    invoice_line_add(invoice=draft, description="Goodwill discount", amount=Decimal("-2.02"))
    assert Invoice.objects.get(pk=draft.pk).total == Decimal("38.00")


def test_invoices_api_hides_drafts_from_customers_and_shows_decimal_strings(
    issuer: Issuer, organization: Organization, owner_client: APIClient
) -> None:
    openai = VendorAccountFactory(organization=organization)
    cost(openai, OCT[0], "12.50")
    invoice = period_close(organization=organization, period="2026-10")
    body = owner_client.get(f"/api/v1/invoices/{invoice.pk}/").json()
    assert (body["number"], body["total"], body["amount_due"]) == ("INV-2026-000001", "12.5000000000", "12.5000000000")
    assert (body["amount_credited"], body["balance_due"]) == ("0.0000000000", "12.5000000000")
    assert Decimal(body["tax"]) == 0
    assert body["lines"][0]["amount"] == "12.5000000000"
    assert owner_client.post(f"/api/v1/invoices/{invoice.pk}/void/").status_code == 403
    Organization.objects.filter(pk=organization.pk).update(invoice_review_days=5)
    other = OrganizationFactory()
    assert owner_client.get("/api/v1/invoices/").json()["count"] == 1
    assert other.pk


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_finalizations_get_fifty_consecutive_numbers() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("concurrent finalization needs PostgreSQL's row locks")
    issuer = IssuerFactory(is_default=True)
    drafts = []
    for i in range(50):
        organization = OrganizationFactory(issuer=issuer)
        drafts.append(
            Invoice.objects.create(
                organization=organization,
                issuer=issuer,
                period_start=date(2026, 10, 1),
                period_end=date(2026, 10, 31),
                currency="USD",
                billing_mode="consolidated",
            ).pk
        )
        assert i >= 0
    barrier = threading.Barrier(10)
    errors: list[BaseException] = []

    def worker(ids: list[int]) -> None:
        from django.db import connection as thread_connection

        try:
            barrier.wait()
            for pk in ids:
                invoice_finalize(invoice_id=pk)
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)
        finally:
            thread_connection.close()

    threads = [threading.Thread(target=worker, args=(drafts[i::10],)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    numbers = sorted(Invoice.objects.values_list("number", flat=True))
    assert numbers == [f"INV-2026-{n:06d}" for n in range(1, 51)]


def test_tax_decision_rules() -> None:
    assert tax_decision(regime="none", issuer_country="US", customer_country="DE", customer_tax_id="").rate == 0
    assert tax_decision(regime="eu_vat", issuer_country="DE", customer_country="US", customer_tax_id="").note
    assert tax_decision(
        regime="eu_vat", issuer_country="DE", customer_country="DE", customer_tax_id="DE136695976"
    ).rate == Decimal(19)
    assert tax_decision(
        regime="eu_vat", issuer_country="DE", customer_country="FR", customer_tax_id="FR00000000000"
    ).rate == Decimal(20)  # malformed id: treated as B2C


def test_a_credit_note_refund_that_fails_midway_keeps_what_was_refunded_and_resumes(
    issuer: Issuer, settings: Any, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    from celery.exceptions import Retry

    from billing.payments.gateways import gateway_for
    from billing.payments.gateways.base import PaymentTemporaryFailure
    from billing.payments.gateways.fake import FakeGateway
    from billing.payments.records import Payment
    from billing.payments.refunds import credit_note_refund
    from tests.factories import PaymentFactory

    settings.PAYMENT_GATEWAYS = ["billing.payments.gateways.fake.FakeGateway"]
    fake = gateway_for("fake")
    assert isinstance(fake, FakeGateway)
    fake.reset()
    organization, *_ = _org_with_usage()
    invoice = period_close(organization=organization, period="2026-10")  # 40.02 USD
    older, newer = (
        PaymentFactory(
            invoice=invoice,
            gateway="fake",
            amount=Decimal(amount),
            status="succeeded",
            succeeded_at=datetime(2026, 11, day, tzinfo=UTC),
        )
        for day, amount in ((3, "25.00"), (4, "15.02"))
    )
    invoice_payment_record(invoice_id=invoice.pk, amount=Decimal("40.02"))

    real_refund = FakeGateway.refund
    calls: list[Decimal] = []

    def refund_then_fail(self: FakeGateway, request: Any) -> Any:
        calls.append(request.amount)
        if len(calls) == 2:
            raise PaymentTemporaryFailure("The gateway did not answer.")
        return real_refund(self, request)

    monkeypatch.setattr(FakeGateway, "refund", refund_then_fail)
    # The task meets the failure and is retried later (eagerly here, Celery says so with Retry).
    with pytest.raises(Retry), django_capture_on_commit_callbacks(execute=True):
        note = credit_note_issue(invoice_id=invoice.pk, amount=Decimal("30.00"), reason="Rate correction")
    note = invoice.credit_notes.get()
    # The newest payment was refunded in full and that stays recorded; the older one failed.
    assert (note.refund_amount, note.amount_refunded) == (Decimal("30.00"), Decimal("15.02"))
    assert Payment.objects.get(pk=newer.pk).amount_refunded == Decimal("15.02")
    assert Payment.objects.get(pk=older.pk).amount_refunded == Decimal("0")

    monkeypatch.setattr(FakeGateway, "refund", real_refund)
    credit_note_refund(credit_note_id=note.pk)  # the task's retry
    credit_note_refund(credit_note_id=note.pk)  # and once more: nothing left to do
    note.refresh_from_db()
    assert note.amount_refunded == Decimal("30.00")
    assert sorted(r.amount for r in fake.refunds) == [Decimal("14.98"), Decimal("15.02")]
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_refunded, invoice.balance_due) == ("paid", Decimal("30.00"), Decimal("0"))
    fake.reset()

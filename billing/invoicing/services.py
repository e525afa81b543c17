"""Invoice lifecycle: totals, finalization (number, snapshot, tax), payments, void, credit notes."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from aggregator.money import RoundingMode, quantize, to_decimal
from aggregator.tenancy.models import ApiKey, User
from aggregator.tenancy.services import audit_record
from billing.invoicing.models import CreditNote, Invoice, InvoiceLine, NumberSeries
from billing.invoicing.numbering import document_number_next
from billing.invoicing.tax import eu_national_currency, tax_by_rate


class InvoiceError(Exception):
    """An invoice action that cannot be done; the message says why and what to do."""


def _tax_rounding(invoice: Invoice) -> Any:
    return invoice.issuer.jp_tax_rounding if invoice.issuer.tax_regime == "jp_consumption" else "ROUND_HALF_UP"


def invoice_totals_refresh(*, invoice: Invoice) -> Invoice:
    """Recompute subtotal, tax per rate, total and amount due of a draft from its lines."""
    if not invoice.is_draft:
        raise InvoiceError(f"Invoice {invoice.number} is finalized; its totals are fixed.")
    lines = list(invoice.lines.all())
    currency = invoice.currency
    subtotal = sum((line.amount for line in lines), Decimal(0))
    taxes = tax_by_rate(
        lines=[(line.amount, line.tax_rate) for line in lines], currency=currency, rounding=_tax_rounding(invoice)
    )
    tax_total = sum((t.tax for t in taxes), Decimal(0))
    invoice.subtotal, invoice.tax_total = subtotal, tax_total
    invoice.total = subtotal + tax_total
    invoice.tax_breakdown = [
        {
            "rate": format(t.rate.normalize(), "f"),
            "base": str(quantize(t.base, currency, rounding="ROUND_HALF_UP")),
            "tax": str(t.tax),
        }
        for t in taxes
        if t.base
    ]
    if invoice.billing_mode == "prepaid_wallet":
        from billing.invoicing.close import wallet_available

        available = wallet_available(
            organization=invoice.organization, start=invoice.period_start, end=invoice.period_end
        )
        # The wallet pays what it holds; the rest is overage, invoiced.
        invoice.wallet_credit_applied = quantize(min(invoice.total, available), currency, rounding="ROUND_DOWN")
        invoice.amount_due = invoice.total - invoice.wallet_credit_applied
    else:
        invoice.amount_due = invoice.total - invoice.payments_applied
    invoice.save()
    return invoice


def _tax_in_currency(invoice: Invoice, on: date, *, currency: str, prefix: str, rounding: RoundingMode) -> None:
    """State each rate's tax also in ``currency`` at the rate of ``on`` (or the last publication
    day before it): ``<prefix>`` and ``<prefix>_rate`` in the tax breakdown."""
    from billing.fx.selectors import FxRateMissing, convert

    if invoice.currency == currency:
        return
    for entry in invoice.tax_breakdown:
        try:
            converted, quote = convert(
                amount=Decimal(entry["tax"]), from_currency=invoice.currency, to_currency=currency, day=on
            )
        except FxRateMissing as exc:
            raise InvoiceError(f"Cannot state the tax in {currency}: {exc}") from None
        entry[prefix] = str(quantize(converted, currency, rounding=rounding))
        entry[f"{prefix.removeprefix('tax_')}_rate"] = str(quote.rate)


def _jpy_tax(invoice: Invoice, on: date) -> None:
    """A qualified invoice in another currency also states the consumption tax in yen."""
    _tax_in_currency(invoice, on, currency="JPY", prefix="tax_jpy", rounding=_tax_rounding(invoice))


def _national_vat(invoice: Invoice, on: date) -> None:
    """EU VAT charged in another currency is also stated in the national currency of the member
    state of supply (Art. 230 VAT Directive): the customer's country, where e-services are taxed."""
    currency = eu_national_currency(invoice.organization.country)
    if not invoice.tax_total or invoice.currency == currency:
        return
    _tax_in_currency(invoice, on, currency=currency, prefix="tax_national", rounding="ROUND_HALF_UP")
    for entry in invoice.tax_breakdown:
        entry["national_currency"] = currency


def _snapshot_customer(invoice: Invoice) -> dict[str, str]:
    org = invoice.organization
    return {
        "name": org.legal_name or org.name,
        "address": org.address,
        "country": org.country,
        "tax_id": org.tax_id,
        "email": org.billing_email,
        "slug": org.slug,
    }


def _snapshot_issuer(invoice: Invoice) -> dict[str, str]:
    issuer = invoice.issuer
    return {
        "name": issuer.legal_name or issuer.name,
        "address": issuer.address,
        "country": issuer.country,
        "email": issuer.email,
        "vat_id": issuer.vat_id,
        "jp_registration_number": issuer.jp_registration_number,
        "bank_details": issuer.bank_details,
        "tax_regime": issuer.tax_regime,
    }


def invoice_finalize(
    *, invoice_id: int, actor: User | None = None, actor_api_key: ApiKey | None = None, on: date | None = None
) -> Invoice:
    """Number, snapshot and freeze a draft; then render its PDF and email it (after commit).
    Finalizing a finalized invoice returns it unchanged."""
    with transaction.atomic():
        invoice = Invoice.objects.select_for_update().select_related("organization", "issuer").get(pk=invoice_id)
        if not invoice.is_draft:
            return invoice
        if invoice.issuer.tax_regime == "jp_consumption" and not invoice.issuer.jp_registration_number:
            raise InvoiceError("A Japanese qualified invoice needs the issuer's registration number (T + 13 digits).")
        invoice_totals_refresh(invoice=invoice)
        on = on or timezone.now().date()
        if invoice.issuer.tax_regime == "jp_consumption":
            _jpy_tax(invoice, on)
        elif invoice.issuer.tax_regime == "eu_vat":
            _national_vat(invoice, on)
        invoice.number = document_number_next(issuer=invoice.issuer, kind=NumberSeries.Kind.INVOICE, on=on)
        invoice.issue_date = on
        invoice.due_date = on + timedelta(days=invoice.organization.payment_terms_days)
        invoice.customer = _snapshot_customer(invoice)
        invoice.issuer_snapshot = _snapshot_issuer(invoice)
        invoice.finalized_at = timezone.now()
        invoice.status = Invoice.Status.PAID if invoice.amount_due <= 0 else Invoice.Status.OPEN
        # Saved while still a draft in the database: the last write of the draft's fields.
        invoice.save()
        audit_record(
            action="invoice.finalize",
            organization=invoice.organization,
            actor=actor,
            actor_api_key=actor_api_key,
            obj=invoice,
            before={"status": Invoice.Status.DRAFT},
            after={
                "status": invoice.status,
                "number": invoice.number,
                "total": str(invoice.total),
                "amount_due": str(invoice.amount_due),
            },
        )
        from billing.invoicing.tasks import invoice_deliver_task

        invoice_deliver_task.delay_on_commit(invoice.pk)
    return invoice


def invoice_line_add(
    *, invoice: Invoice, description: str, amount: Decimal, actor: User | None = None, vendor: str = ""
) -> InvoiceLine:
    """The operator adds an adjustment line to a draft (negative for a discount)."""
    if not invoice.is_draft:
        raise InvoiceError(f"Invoice {invoice.number} is finalized: issue a credit note instead.")
    amount = to_decimal(amount)
    if amount != quantize(amount, invoice.currency, rounding="ROUND_HALF_UP"):
        raise InvoiceError(f"Amounts in {invoice.currency} have at most the currency's decimals.")
    with transaction.atomic():
        rate = invoice.lines.values_list("tax_rate", flat=True).first() or Decimal(0)
        line = InvoiceLine.objects.create(
            invoice=invoice,
            kind=InvoiceLine.Kind.ADJUSTMENT,
            description=description,
            amount=amount,
            vendor=vendor,
            tax_rate=rate,
            position=10_000,
        )
        invoice_totals_refresh(invoice=invoice)
        audit_record(
            action="invoice.add_line",
            organization=invoice.organization,
            actor=actor,
            obj=invoice,
            after={"description": description, "amount": str(amount)},
        )
    return line


def _status_refresh(invoice: Invoice) -> None:
    """Paid once the balance is settled; partially paid while some of it is (void, uncollectible and
    draft invoices keep their status)."""
    if invoice.status not in (Invoice.Status.OPEN, Invoice.Status.PARTIALLY_PAID, Invoice.Status.PAID):
        return
    if invoice.balance_due <= 0:
        invoice.status = Invoice.Status.PAID
    elif invoice.amount_paid - invoice.amount_refunded > 0:
        invoice.status = Invoice.Status.PARTIALLY_PAID
    else:
        invoice.status = Invoice.Status.OPEN


@transaction.atomic
def invoice_payment_record(*, invoice_id: int, amount: Decimal) -> Invoice:
    """Add a confirmed payment: partial payments add up; the invoice is paid when they reach the amount due."""
    invoice = Invoice.objects.select_for_update().get(pk=invoice_id)
    if invoice.status in (Invoice.Status.DRAFT, Invoice.Status.VOID):
        raise InvoiceError(f"Invoice {invoice} is {invoice.status}: it cannot take payments.")
    before = _balance_state(invoice)
    invoice.amount_paid = invoice.amount_paid + to_decimal(amount)
    if invoice.status == Invoice.Status.UNCOLLECTIBLE:  # a late payment still settles it
        invoice.status = Invoice.Status.OPEN
    _status_refresh(invoice)
    invoice.save(update_fields=["amount_paid", "status"])
    audit_record(
        action="invoice.payment",
        organization=invoice.organization,
        obj=invoice,
        before=before,
        after={**_balance_state(invoice), "amount": str(to_decimal(amount))},
    )
    return invoice


def _balance_state(invoice: Invoice) -> dict[str, str]:
    return {
        "status": invoice.status,
        "amount_paid": str(invoice.amount_paid),
        "amount_refunded": str(invoice.amount_refunded),
        "balance_due": str(invoice.balance_due),
    }


def invoice_refunds_refresh(*, invoice_id: int) -> Invoice:
    """Take the refunds of the invoice's payments (by us or from the gateway's dashboard) and what
    lost disputes took back into its balance (``amount_refunded``): a refund without a credit note,
    or a chargeback, leaves that much owed again."""
    from billing.payments.records import Payment

    with transaction.atomic():
        invoice = Invoice.objects.select_for_update().get(pk=invoice_id)
        returned = Payment.objects.filter(invoice_id=invoice_id).aggregate(
            refunded=Sum("amount_refunded"), charged_back=Sum("amount_charged_back")
        )
        refunded = Decimal(returned["refunded"] or 0) + Decimal(returned["charged_back"] or 0)
        if refunded == invoice.amount_refunded:
            return invoice
        before = _balance_state(invoice)
        invoice.amount_refunded = refunded
        _status_refresh(invoice)
        invoice.save(update_fields=["amount_refunded", "status"])
        audit_record(
            action="invoice.refund", organization=invoice.organization, obj=invoice, before=before,
            after=_balance_state(invoice),
        )  # fmt: skip
    return invoice


@transaction.atomic
def invoice_void(*, invoice_id: int, actor: User | None = None, reason: str = "") -> Invoice:
    """Void an unpaid finalized invoice; it keeps its number (a voided number is never reused)."""
    invoice = Invoice.objects.select_for_update().get(pk=invoice_id)
    if invoice.is_draft:
        raise InvoiceError("A draft has no number to keep: delete or rebuild it instead of voiding.")
    if invoice.amount_paid > 0:
        raise InvoiceError(f"Invoice {invoice.number} has payments: issue a credit note and refund instead.")
    if invoice.status == Invoice.Status.VOID:
        return invoice
    before = {"status": invoice.status}
    invoice.status = Invoice.Status.VOID
    invoice.save(update_fields=["status"])
    audit_record(
        action="invoice.void",
        organization=invoice.organization,
        actor=actor,
        obj=invoice,
        before=before,
        after={"status": invoice.status, "reason": reason},
    )
    return invoice


@transaction.atomic
def invoice_mark_uncollectible(*, invoice_id: int, actor: User | None = None) -> Invoice:
    invoice = Invoice.objects.select_for_update().get(pk=invoice_id)
    if invoice.status not in (Invoice.Status.OPEN, Invoice.Status.PARTIALLY_PAID):
        raise InvoiceError(f"Only open invoices can become uncollectible; {invoice} is {invoice.status}.")
    invoice.status = Invoice.Status.UNCOLLECTIBLE
    invoice.save(update_fields=["status"])
    audit_record(action="invoice.uncollectible", organization=invoice.organization, actor=actor, obj=invoice)
    return invoice


def credit_note_issue(
    *, invoice_id: int, amount: Decimal, reason: str, actor: User | None = None, refund: bool = True
) -> CreditNote:
    """Credit (part of) a finalized invoice, tax included, in a separate number series.

    The credit reduces what is owed; what the customer has already paid beyond the new balance is
    refunded to their payments after commit (``refund=False`` keeps it as a credit to settle by
    hand, e.g. by bank transfer)."""
    with transaction.atomic():
        invoice = Invoice.objects.select_for_update().select_related("issuer", "organization").get(pk=invoice_id)
        if invoice.is_draft:
            raise InvoiceError("Drafts are corrected by editing them; credit notes are for finalized invoices.")
        amount = to_decimal(amount)
        credited = invoice.amount_credited
        if amount <= 0 or amount + credited > invoice.total:
            raise InvoiceError(f"A credit note must be positive and at most the uncredited {invoice.total - credited}.")
        if not reason.strip():
            raise InvoiceError("Say why the invoice is credited (it is printed on the credit note).")
        share = amount / invoice.total if invoice.total else Decimal(0)
        tax = quantize(invoice.tax_total * share, invoice.currency, rounding="ROUND_HALF_UP")
        today = timezone.now().date()
        number = document_number_next(issuer=invoice.issuer, kind=NumberSeries.Kind.CREDIT_NOTE, on=today)
        invoice.amount_credited = credited + amount
        overpaid = max(Decimal(0), -invoice.balance_due)
        note = CreditNote.objects.create(
            organization=invoice.organization,
            invoice=invoice,
            number=number,
            amount=amount,
            tax_amount=tax,
            reason=reason.strip(),
            issue_date=today,
            refund_amount=min(overpaid, amount) if refund else Decimal(0),
        )
        _status_refresh(invoice)
        invoice.save(update_fields=["amount_credited", "status"])
        audit_record(
            action="credit_note.issue",
            organization=invoice.organization,
            actor=actor,
            obj=note,
            before={"invoice": invoice.number, "credited": str(credited)},
            after={
                "invoice": invoice.number,
                "credited": str(credited + amount),
                "amount": str(amount),
                "refund": str(note.refund_amount),
                "reason": reason,
            },
        )
        if note.refund_amount:
            from billing.payments.tasks import credit_note_refund_task

            credit_note_refund_task.delay_on_commit(note.pk)
    return note


def invoices_finalize_reviewed(*, now: Any = None) -> list[Invoice]:
    """Finalize drafts whose review period ended."""
    now = now or timezone.now()
    due = Invoice.objects.filter(status=Invoice.Status.DRAFT, review_until__lte=now).values_list("pk", flat=True)
    return [invoice_finalize(invoice_id=pk) for pk in list(due)]

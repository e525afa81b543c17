"""Invoice delivery: render the PDF once, store it with its SHA-256, email it once.

``invoice_deliver`` is what the Celery task ``invoice_deliver_task`` runs after finalization; it
is safe to run twice (task redelivery, a retry, an operator's click):

1. **PDF.** If ``invoice.pdf`` is empty, the PDF is rendered outside any transaction (WeasyPrint
   takes a second or more), then stored under a row lock: the first worker to get the lock stores
   its file and the hash, a second one finds the PDF there and drops its own rendering. Invoices of
   EU VAT issuers are PDF/A-3b with an embedded Factur-X EN 16931 XML; every invoice carries its
   usage rows as ``usage-<number>.csv``.
2. **Email.** ``invoice_email_send`` decides and marks under a row lock, commits, then talks SMTP.

Email delivery guarantee (the choice, and why)
-----------------------------------------------
The row is marked (``emailed_at`` set and committed) *before* the SMTP conversation, so two
workers, a redelivered task or a double click never send the invoice twice: at most once per
decision. If the SMTP send raises (server down, refused recipient, timeout), the mark is taken back
(compare-and-set on the exact ``emailed_at`` we wrote) and the error re-raised, so a later run sends
it: failures that we *see* are retried, i.e. at least once for them. The one gap is a worker killed
between the commit and the end of the SMTP conversation: the invoice then stays marked as emailed
and is not sent again by itself (the operator's "Resend" does it). We accept that gap rather than
the opposite one (marking after sending, where a crash after a successful send emails the customer
twice) because a duplicate invoice invites a duplicate payment, while a missing email is visible
(portal, admin, the customer's dunning reminders) and cheap to fix. Remaining duplicate risk: the
server accepted the message but the connection broke before its reply; we then retry and the
customer may get it twice. That is SMTP's own at-least-once behaviour and cannot be closed here.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import formats, timezone, translation
from django.utils.text import get_valid_filename

from aggregator.money import minor_units, quantize
from billing.alerts.services import billing_contacts
from billing.invoicing import facturx as fx
from billing.invoicing.models import CreditNote, Invoice, InvoiceLine
from billing.invoicing.pdf import InvoiceRenderError, PdfAttachment, html_to_pdf
from providers.focus import focus_csv_lines
from providers.models import CostRecord

logger = logging.getLogger(__name__)

__all__ = [
    "InvoiceRenderError",
    "credit_note_pdf_render",
    "invoice_deliver",
    "invoice_email_send",
    "invoice_html",
    "invoice_pay_url",
    "invoice_pdf_render",
    "invoice_pdf_store",
    "invoice_usage_csv",
    "usage_csv_name",
]


# --- Formatting ---------------------------------------------------------------------------------


def _grouped(value: Decimal, decimals: int) -> str:
    return format(value, f",.{decimals}f")


def money(value: Decimal, currency: str) -> str:
    """``1,234.56 USD``; ``600 JPY``: rounded half up to the currency's minor unit."""
    return f"{_grouped(quantize(value, currency, rounding='ROUND_HALF_UP'), minor_units(currency))} {currency}"


def _amount(value: Decimal, currency: str) -> str:
    return _grouped(quantize(value, currency, rounding="ROUND_HALF_UP"), minor_units(currency))


def _number(value: Decimal, *, min_decimals: int = 0, max_decimals: int = 6) -> str:
    """A quantity, original amount or rate: grouped, no trailing zeros beyond ``min_decimals``."""
    shown = value.quantize(Decimal(1).scaleb(-max_decimals), rounding=ROUND_HALF_UP).normalize()
    exponent = int(shown.as_tuple().exponent)
    return _grouped(shown, max(min_decimals, -exponent if exponent < 0 else 0))


def _percent(value: Decimal | str) -> str:
    return format(Decimal(value).normalize(), "f")


def _date(value: date | None) -> str:
    return formats.date_format(value, "DATE_FORMAT") if value else ""


def invoice_pay_url(invoice: Invoice) -> str:
    return f"{settings.SITE_URL}/invoices/{invoice.pk}/pay/"


def usage_csv_name(invoice: Invoice) -> str:
    return get_valid_filename(f"usage-{invoice.number or invoice.pk}.csv")


def _regime(invoice: Invoice) -> str:
    return str(invoice.issuer_snapshot.get("tax_regime") or invoice.issuer.tax_regime)


# --- Document data ------------------------------------------------------------------------------


@dataclass
class _VendorGroup:
    label: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    subtotal: Decimal = Decimal(0)
    originals: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))


def _line_row(line: InvoiceLine, currency: str) -> dict[str, Any]:
    converted = bool(line.original_amount is not None and line.original_currency and line.original_currency != currency)
    return {
        "kind": line.kind,
        "description": line.description,
        "quantity": f"{_number(line.quantity)} {line.unit}".strip() if line.quantity is not None else "",
        "original": f"{_number(line.original_amount, min_decimals=minor_units(line.original_currency))} "
        f"{line.original_currency}"
        if converted and line.original_amount is not None
        else "",
        "rate": f"1 {line.original_currency} = {_number(line.rate)} {currency}"
        if converted and line.rate is not None
        else "",
        "tax_rate": f"{_percent(line.tax_rate)}%",
        "amount": _amount(line.amount, currency),
    }


def _vendor_groups(lines: list[InvoiceLine], currency: str) -> list[dict[str, Any]]:
    groups: dict[str, _VendorGroup] = {}
    for line in lines:  # ordered by position: vendors appear in the order close.build_lines wrote them
        label = line.vendor_label or line.vendor
        group = groups.setdefault(label, _VendorGroup(label))
        group.rows.append(_line_row(line, currency))
        group.subtotal += line.amount
        if line.original_amount is not None and line.original_currency and line.original_currency != currency:
            group.originals[line.original_currency] += line.original_amount
    return [
        {
            "label": g.label,
            "rows": g.rows,
            "subtotal": _amount(g.subtotal, currency),
            "originals": ", ".join(
                f"{_number(v, min_decimals=minor_units(c))} {c}" for c, v in sorted(g.originals.items())
            ),
        }
        for g in groups.values()
    ]


def _tax_rows(invoice: Invoice) -> list[dict[str, str]]:
    currency = invoice.currency
    rows = []
    for entry in invoice.tax_breakdown:
        row = {
            "rate": _percent(entry["rate"]),
            "base": money(Decimal(entry["base"]), currency),
            "tax": money(Decimal(entry["tax"]), currency),
            "tax_jpy": "",
            "jpy_rate": "",
            "tax_national": "",
            "national_rate": "",
        }
        if entry.get("tax_jpy") is not None:
            row["tax_jpy"] = money(Decimal(entry["tax_jpy"]), "JPY")
            row["jpy_rate"] = (
                f"1 {currency} = {_number(Decimal(entry['jpy_rate']))} JPY" if entry.get("jpy_rate") else ""
            )
        if entry.get("tax_national") is not None:
            national = entry["national_currency"]
            row["tax_national"] = money(Decimal(entry["tax_national"]), national)
            row["national_rate"] = f"1 {currency} = {_number(Decimal(entry['national_rate']))} {national}"
        rows.append(row)
    return rows


def _snapshots(invoice: Invoice) -> tuple[dict[str, Any], dict[str, Any]]:
    """The frozen issuer and customer; a draft (preview) has none yet and shows the live values."""
    if invoice.issuer_snapshot and invoice.customer:
        return invoice.issuer_snapshot, invoice.customer
    from billing.invoicing.services import _snapshot_customer, _snapshot_issuer

    return _snapshot_issuer(invoice), _snapshot_customer(invoice)


def invoice_document_context(invoice: Invoice) -> dict[str, Any]:
    """Everything the invoice template prints, formatted (call inside the invoice's language)."""
    currency = invoice.currency
    issuer, customer = _snapshots(invoice)
    regime = str(issuer.get("tax_regime") or "none")
    taxes = _tax_rows(invoice)
    return {
        "invoice": invoice,
        "lang": invoice.locale,
        "currency": currency,
        "issuer": issuer,
        "customer": customer,
        "regime": regime,
        "qualified": regime == "jp_consumption",
        "eu": regime == "eu_vat",
        "issue_date": _date(invoice.issue_date),
        "due_date": _date(invoice.due_date),
        "period_start": _date(invoice.period_start),
        "period_end": _date(invoice.period_end),
        "groups": _vendor_groups(list(invoice.lines.all()), currency),
        "taxes": taxes,
        "national_currency": next((e["national_currency"] for e in invoice.tax_breakdown if "tax_national" in e), ""),
        "show_taxes": regime != "none" or any(Decimal(e["tax"]) for e in invoice.tax_breakdown),
        "subtotal": money(invoice.subtotal, currency),
        "tax_total": money(invoice.tax_total, currency),
        "total": money(invoice.total, currency),
        "wallet_credit_applied": money(invoice.wallet_credit_applied, currency)
        if invoice.wallet_credit_applied
        else "",
        "payments_applied": money(invoice.payments_applied, currency) if invoice.payments_applied else "",
        "amount_due": money(invoice.amount_due, currency),
        "paid": invoice.amount_due <= 0,
        "pay_url": invoice_pay_url(invoice),
        "usage_csv": usage_csv_name(invoice),
    }


def invoice_html(invoice: Invoice) -> str:
    """The invoice as self-contained HTML, in the invoice's language."""
    with translation.override(invoice.locale):
        return render_to_string("invoices/invoice.html", invoice_document_context(invoice))


# --- Usage CSV ----------------------------------------------------------------------------------


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0, 0), tzinfo=UTC)


def invoice_usage_csv(*, invoice: Invoice) -> bytes:
    """The organization's cost rows of the service period in the FOCUS columns of the cost export
    (``providers.focus``): vendor amounts in the vendor's currency, before conversion and fee."""
    records = CostRecord.objects.filter(
        organization_id=invoice.organization_id,
        charge_period_start__gte=_midnight(invoice.period_start),
        charge_period_start__lt=_midnight(invoice.period_end + timedelta(days=1)),
    )
    return "".join(focus_csv_lines(records=records)).encode("utf-8")


# --- PDF ----------------------------------------------------------------------------------------


def invoice_pdf_render(*, invoice: Invoice) -> bytes:
    """The invoice PDF with its usage CSV attached; PDF/A-3b + Factur-X for EU VAT issuers."""
    html = invoice_html(invoice)
    usage = PdfAttachment(
        name=usage_csv_name(invoice),
        data=invoice_usage_csv(invoice=invoice),
        description=f"Usage of {invoice.period_start:%Y-%m-%d} to {invoice.period_end:%Y-%m-%d} (FOCUS columns)",
    )
    if _regime(invoice) != "eu_vat":
        return html_to_pdf(html, lang=invoice.locale, attachments=[usage])
    # factur-x rewrites the list of embedded files, so it attaches the CSV too (see facturx.py).
    xml = fx.invoice_cii_xml(invoice, pay_url=invoice_pay_url(invoice))
    pdf = html_to_pdf(html, lang=invoice.locale, pdf_variant="pdf/a-3b")
    issuer_name = str(invoice.issuer_snapshot.get("name") or invoice.issuer.name)
    return fx.facturx_embed(
        pdf,
        xml,
        attachments=[usage],
        lang=invoice.locale,
        title=f"{issuer_name}: Invoice {invoice.number}",
        author=issuer_name,
    )


def invoice_pdf_store(*, invoice_id: int) -> Invoice:
    """Render and store the PDF and its SHA-256 unless already stored. Returns the invoice."""
    invoice = Invoice.objects.select_related("issuer", "organization").get(pk=invoice_id)
    if invoice.pdf:
        return invoice
    if invoice.is_draft:
        raise InvoiceRenderError("A draft has no PDF: finalize it first.")
    data = invoice_pdf_render(invoice=invoice)  # slow: outside any lock
    digest = hashlib.sha256(data).hexdigest()
    with transaction.atomic():
        locked = Invoice.objects.select_for_update().select_related("issuer", "organization").get(pk=invoice_id)
        if locked.pdf:
            return locked  # another worker stored it first; ours is dropped
        locked.pdf.save(get_valid_filename(f"{locked.number}.pdf"), ContentFile(data), save=False)
        locked.pdf_sha256 = digest
        try:
            locked.save(update_fields=["pdf", "pdf_sha256"])
        except BaseException:
            locked.pdf.storage.delete(locked.pdf.name)
            raise
    logger.info("Invoice %s PDF stored as %s (sha256 %s)", locked.number, locked.pdf.name, digest)
    return locked


def invoice_pdf_bytes(invoice: Invoice) -> bytes:
    """The stored PDF, checked against its SHA-256."""
    with invoice.pdf.open("rb") as stored:
        data: bytes = stored.read()
    if hashlib.sha256(data).hexdigest() != invoice.pdf_sha256:
        raise InvoiceRenderError(f"The stored PDF of invoice {invoice.number} does not match its SHA-256.")
    return data


# --- Email --------------------------------------------------------------------------------------


def _invoice_email(invoice: Invoice, recipients: list[str]) -> EmailMultiAlternatives:
    issuer, customer = _snapshots(invoice)
    with translation.override(invoice.locale):
        context = {
            "invoice": invoice,
            "issuer_name": issuer.get("name") or "",
            "customer_name": customer.get("name") or "",
            "period_start": _date(invoice.period_start),
            "period_end": _date(invoice.period_end),
            "issue_date": _date(invoice.issue_date),
            "due_date": _date(invoice.due_date),
            "total": money(invoice.total, invoice.currency),
            "amount_due": money(invoice.amount_due, invoice.currency),
            "paid": invoice.amount_due <= 0,
            "pay_url": invoice_pay_url(invoice),
        }
        subject = " ".join(render_to_string("emails/invoice_subject.txt", context).split())
        text = render_to_string("emails/invoice.txt", context)
        html = render_to_string("emails/invoice.html", context)
    reply_to = [issuer["email"]] if issuer.get("email") else None
    message = EmailMultiAlternatives(subject, text, settings.DEFAULT_FROM_EMAIL, to=recipients, reply_to=reply_to)
    message.attach_alternative(html, "text/html")
    message.attach(get_valid_filename(f"{invoice.number}.pdf"), invoice_pdf_bytes(invoice), "application/pdf")
    return message


def invoice_email_send(*, invoice_id: int, resend: bool = False) -> bool:
    """Email the invoice PDF to the organization's billing contacts, once (again with ``resend``).

    Returns whether an email was sent. See the module docstring for the delivery guarantee.
    Call it outside a transaction: the mark must be committed before the SMTP conversation.
    """
    invoice = Invoice.objects.get(pk=invoice_id)
    if invoice.is_draft:
        from billing.invoicing.services import InvoiceError

        raise InvoiceError("Drafts are not emailed: finalize the invoice first.")
    if invoice.emailed_at is not None and not resend:
        return False
    if not invoice.pdf:
        invoice_pdf_store(invoice_id=invoice_id)  # rendered before the lock, never under it
    with transaction.atomic():
        invoice = Invoice.objects.select_for_update().select_related("organization", "issuer").get(pk=invoice_id)
        if invoice.emailed_at is not None and not resend:
            return False  # another worker decided first
        if invoice.status == Invoice.Status.VOID and not resend:
            logger.info("Invoice %s is void: not emailed.", invoice.number)
            return False
        recipients = billing_contacts(invoice.organization)
        if not recipients:
            logger.warning("Invoice %s: the organization has no billing email and no owner or billing admin.",
                           invoice.number)  # fmt: skip
            return False
        previous, marked = invoice.emailed_at, timezone.now()
        invoice.emailed_at = marked
        invoice.save(update_fields=["emailed_at"])
    # Committed: any other worker now sees the invoice as emailed. Send, and take the mark back on failure.
    try:
        _invoice_email(invoice, recipients).send(fail_silently=False)
    except BaseException:
        taken_back = Invoice.objects.filter(pk=invoice_id, emailed_at=marked).update(emailed_at=previous)
        logger.exception("Invoice %s: sending the email failed%s.", invoice.number,
                         "; it will be sent again on the next delivery" if taken_back else "")  # fmt: skip
        raise
    logger.info("Invoice %s emailed to %d recipient(s)%s.", invoice.number, len(recipients),
                " (resent)" if previous else "")  # fmt: skip
    return True


def invoice_deliver(*, invoice_id: int) -> None:
    """Render and store the PDF if missing, then email it if not yet emailed. Safe to run twice."""
    invoice = Invoice.objects.get(pk=invoice_id)
    if invoice.is_draft:
        logger.warning("Invoice %s is a draft: nothing to deliver.", invoice)
        return
    if not invoice.pdf:
        invoice = invoice_pdf_store(invoice_id=invoice_id)
    if invoice.emailed_at is None:
        invoice_email_send(invoice_id=invoice_id)


# --- Credit notes -------------------------------------------------------------------------------


def credit_note_pdf_render(*, credit_note: CreditNote) -> bytes:
    """A one-page credit note referring to its invoice (number and date), in the invoice's language."""
    invoice = credit_note.invoice
    issuer, customer = _snapshots(invoice)
    currency = invoice.currency
    with translation.override(invoice.locale):
        html = render_to_string(
            "invoices/credit_note.html",
            {
                "note": credit_note,
                "invoice": invoice,
                "lang": invoice.locale,
                "issuer": issuer,
                "customer": customer,
                "qualified": issuer.get("tax_regime") == "jp_consumption",
                "issue_date": _date(credit_note.issue_date),
                "invoice_date": _date(invoice.issue_date),
                "net": money(credit_note.amount - credit_note.tax_amount, currency),
                "tax": money(credit_note.tax_amount, currency),
                "amount": money(credit_note.amount, currency),
            },
        )
    return html_to_pdf(html, lang=invoice.locale)

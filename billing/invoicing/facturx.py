"""Factur-X (= ZUGFeRD 2) for invoices of EU VAT issuers: an EN 16931 CII XML built from the
finalized invoice and embedded into its PDF/A-3b.

The XML is built with the ``factur-x`` package from a dict keyed by EN 16931 business terms
(BT-/BG- codes; the dict layout is that of factur-x 7.8, pinned because it changes between 7.x
releases) and validated against the official Factur-X EN 16931 XSD. The schematron (business rules
BR-*) needs an external Saxon server and is not run here: the totals below follow BR-CO-10..16 by
construction, and the tests check them against the invoice.

Embedding also goes through ``factur-x`` (``generate_from_binary``), which writes the ``fx:`` XMP
extension schema and a single catalog ``/AF`` entry per file. It replaces the PDF's list of
embedded files, so the usage CSV is attached in the same call rather than by WeasyPrint.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from stdnum import bic as stdnum_bic
from stdnum import iban as stdnum_iban

from aggregator.money import quantize
from billing.invoicing.models import Invoice, InvoiceLine
from billing.invoicing.pdf import InvoiceRenderError, PdfAttachment
from billing.invoicing.tax import OUTSIDE_EU_NOTE, REVERSE_CHARGE_NOTE

LEVEL = "en16931"
INVOICE_TYPE_CODE = "380"  # UNTDID 1001: commercial invoice
UNIT_ONE = "C62"  # UN/ECE Rec. 20: "one" (each line is one service item for the period)
PAYMENT_SEPA_CREDIT_TRANSFER = "58"  # UNTDID 4461
PAYMENT_NOT_DEFINED = "1"

_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_BIC = re.compile(r"\b[A-Z]{4}[A-Z]{2}[A-Z0-9]{2}(?:[A-Z0-9]{3})?\b")


def _amount(value: Decimal, currency: str) -> str:
    return str(quantize(value, currency, rounding="ROUND_HALF_UP"))


def _percent(value: Decimal | str) -> str:
    return format(Decimal(value).normalize(), "f")


def vat_category(*, rate: Decimal, tax_note: str) -> tuple[str, str, str]:
    """(UNCL 5305 category, VATEX exemption code, exemption text) for a rate on this invoice."""
    if rate > 0:
        return "S", "", ""
    if tax_note == REVERSE_CHARGE_NOTE:
        return "AE", "VATEX-EU-AE", "Reverse charge"
    if tax_note == OUTSIDE_EU_NOTE:
        return "O", "VATEX-EU-O", "Not subject to VAT"
    if tax_note:
        return "E", "", tax_note
    return "Z", "", ""


def _address(party: dict[str, Any], what: str) -> dict[str, str]:
    if not party.get("country"):
        raise InvoiceRenderError(
            f"The {what} has no country: EN 16931 requires one (BR-9/BR-11). Set it, then deliver the invoice again."
        )
    rows = [row.strip() for row in str(party.get("address") or "").splitlines() if row.strip()]
    result = {"country_code": party["country"]}
    for key, value in zip(("addr_l1", "addr_l2"), rows, strict=False):
        result[key] = value
    if len(rows) > 2:
        result["addr_l3"] = ", ".join(rows[2:])
    return result


def _payment_means(bank_details: str) -> dict[str, Any]:
    compact = bank_details.upper()
    ibans = [m.replace(" ", "") for m in _IBAN.findall(compact)]
    iban = next((i for i in ibans if stdnum_iban.is_valid(i)), "")
    if not iban:
        return {"BT-81": PAYMENT_NOT_DEFINED}
    means: dict[str, Any] = {"BT-81": PAYMENT_SEPA_CREDIT_TRANSFER, "BT-84": iban}
    bic = next((b for b in _BIC.findall(compact) if stdnum_bic.is_valid(b)), "")
    if bic:
        means["BT-86"] = bic
    return means


def _line_name(line: InvoiceLine) -> str:
    label = line.vendor_label or line.vendor
    if line.kind == InvoiceLine.Kind.FEE:
        return f"Service fee, {label}" if label else "Service fee"
    return f"{label}: {line.description}" if label and line.kind == InvoiceLine.Kind.USAGE else line.description


def _line_details(line: InvoiceLine, currency: str) -> str:
    parts = []
    if line.quantity is not None and line.unit:
        parts.append(f"{format(line.quantity.normalize(), 'f')} {line.unit}")
    if line.original_amount is not None and line.original_currency and line.original_currency != currency:
        parts.append(f"{format(line.original_amount.normalize(), 'f')} {line.original_currency}")
        if line.rate is not None:
            parts.append(f"at 1 {line.original_currency} = {format(line.rate.normalize(), 'f')} {currency}")
    return "; ".join(parts)


def invoice_cii_data(invoice: Invoice, *, pay_url: str) -> dict[str, Any]:
    """The EN 16931 data of a finalized invoice, keyed by business term, as factur-x 7.8 expects."""
    if not invoice.number or invoice.issue_date is None:
        raise InvoiceRenderError("Only a finalized invoice (number and issue date) has an e-invoice.")
    currency = invoice.currency
    seller = invoice.issuer_snapshot
    buyer = invoice.customer
    lines = list(invoice.lines.all())
    breakdown = {Decimal(entry["rate"]): entry for entry in invoice.tax_breakdown}
    for line in lines:  # a rate whose lines cancel out still needs its (zero) breakdown
        breakdown.setdefault(line.tax_rate, {"rate": str(line.tax_rate), "base": "0", "tax": "0"})
    categories = {rate: vat_category(rate=rate, tax_note=invoice.tax_note) for rate in breakdown}
    # BR-O-02: an invoice with category O carries neither party's VAT id.
    with_vat_ids = not any(code == "O" for code, _, _ in categories.values())

    seller_party: dict[str, Any] = {"name": seller.get("name") or "", **_address(seller, "issuer")}
    if seller.get("vat_id"):
        # BT-29 (seller identifier) keeps BR-CO-26 satisfied when BR-O-02 forbids the VAT id (BT-31).
        seller_party["identifiers"] = {None: seller["vat_id"]}
        if with_vat_ids:
            seller_party["vat_identifier"] = seller["vat_id"]
    if seller.get("email"):
        seller_party["contacts"] = [{"email": seller["email"]}]
        seller_party.update(einvoicing_addr=seller["email"], einvoicing_addr_schemeid="EM")
    buyer_party: dict[str, Any] = {"name": buyer.get("name") or "", **_address(buyer, "customer")}
    if with_vat_ids and buyer.get("tax_id"):
        buyer_party["vat_identifier"] = buyer["tax_id"]
    if buyer.get("email"):
        buyer_party.update(einvoicing_addr=buyer["email"], einvoicing_addr_schemeid="EM")

    prepaid = invoice.total - invoice.amount_due  # wallet credit and payments applied
    data: dict[str, Any] = {
        "BT-1": invoice.number,
        "BT-2": invoice.issue_date,
        "BT-3": INVOICE_TYPE_CODE,
        "BT-5": currency,
        "BT-10": buyer.get("slug") or str(invoice.organization_id),
        "BT-20": f"Pay online: {pay_url}",
        "BT-24": "urn:cen.eu:en16931:2017",
        "BT-72": invoice.period_end,
        "BT-73": invoice.period_start,
        "BT-74": invoice.period_end,
        "BT-82": f"Bank transfer, or online at {pay_url}",
        "BT-83": invoice.number,
        "BG-4": seller_party,
        "BG-7": buyer_party,
        "BG-23": [
            {
                "BT-116": _amount(Decimal(entry["base"]), currency),
                "BT-117": _amount(Decimal(entry["tax"]), currency),
                "BT-118": categories[rate][0],
                "BT-119": _percent(rate),
                **({"BT-121": categories[rate][1]} if categories[rate][1] else {}),
                **({"BT-120": categories[rate][2]} if categories[rate][2] else {}),
            }
            for rate, entry in sorted(breakdown.items())
        ],
        "BG-25": [
            {
                "BT-126": str(index),
                "BT-127-00": [{"BT-127": details}] if (details := _line_details(line, currency)) else [],
                "BT-129": "1" if line.amount >= 0 else "-1",  # BR-27: the item price is never negative
                "BT-130": UNIT_ONE,
                "BT-131": _amount(line.amount, currency),
                "BT-134": invoice.period_start,
                "BT-135": invoice.period_end,
                "BT-146": _amount(abs(line.amount), currency),
                "BT-151": categories[line.tax_rate][0],
                "BT-152": _percent(line.tax_rate),
                "BT-153": _line_name(line)[:300] or "Service",
            }
            for index, line in enumerate(lines, start=1)
        ],
        "BT-106": _amount(invoice.subtotal, currency),
        "BT-109": _amount(invoice.subtotal, currency),
        "BT-110": _amount(invoice.tax_total, currency),
        "BT-112": _amount(invoice.total, currency),
        "BT-113": _amount(prepaid, currency),
        "BT-115": _amount(invoice.amount_due, currency),
        **_payment_means(str(seller.get("bank_details") or "")),
    }
    national = {entry["national_currency"] for entry in invoice.tax_breakdown if entry.get("national_currency")}
    if len(national) == 1:
        # BT-6 / BT-111: the VAT total in the national currency of the member state (Art. 230).
        data["BT-6"] = national_currency = national.pop()
        data["BT-111"] = _amount(
            sum((Decimal(entry.get("tax_national") or 0) for entry in invoice.tax_breakdown), Decimal(0)),
            national_currency,
        )
    if invoice.due_date is not None:
        data["BT-9"] = invoice.due_date
    if invoice.tax_note:
        data["BG-1"] = [{"BT-22": invoice.tax_note}]
    return data


def invoice_cii_xml(invoice: Invoice, *, pay_url: str) -> bytes:
    """The Factur-X EN 16931 CII XML of the invoice, checked against the official XSD."""
    import facturx

    try:
        xml: bytes = facturx.generate_cii_xml(
            invoice_cii_data(invoice, pay_url=pay_url), level=LEVEL, check_xsd=False, check_schematron=False
        )
        facturx.xml_check_xsd(xml, flavor="factur-x", level=LEVEL)
    except InvoiceRenderError:
        raise
    except Exception as exc:  # factur-x raises bare Exception/ValueError with a readable message
        raise InvoiceRenderError(f"Invoice {invoice.number}: the Factur-X XML is invalid: {exc}") from exc
    return xml


def facturx_embed(
    pdf: bytes, xml: bytes, *, attachments: Sequence[PdfAttachment] = (), lang: str, title: str, author: str
) -> bytes:
    """Embed ``xml`` as factur-x.xml (AFRelationship Data) and the other files (Supplement) into a
    PDF/A-3b, with the Factur-X XMP metadata."""
    import facturx

    now = datetime.now(UTC)
    result: bytes = facturx.generate_from_binary(
        pdf,
        xml,
        flavor="factur-x",
        level=LEVEL,
        check_xsd=False,  # checked when built
        check_schematron=False,
        pdf_metadata={"author": author, "keywords": "Factur-X, Invoice", "title": title, "subject": title},
        lang=lang,
        attachments={
            a.name: {
                "filedata": a.data,
                "description": a.description,
                "afrelationship": "supplement",
                "modification_datetime": now,
                "creation_datetime": now,
            }
            for a in attachments
        },
        afrelationship="data",
    )
    return result

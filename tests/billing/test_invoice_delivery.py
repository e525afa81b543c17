"""Invoice delivery: the PDF (English, Japanese, Factur-X for EU issuers), its usage CSV, its
SHA-256, and the email sent once through a real SMTP server on 127.0.0.1."""

from __future__ import annotations

import csv
import hashlib
import io
import re
import subprocess
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import facturx
import pypdf
import pytest
from django.core import mail
from lxml import etree

from aggregator.tenancy.models import Issuer, Organization, Role
from billing.fx.models import FxRate
from billing.invoicing import delivery, pdf
from billing.invoicing.delivery import (
    credit_note_pdf_render,
    invoice_deliver,
    invoice_email_send,
    invoice_pdf_render,
    invoice_usage_csv,
)
from billing.invoicing.models import Invoice, InvoiceImmutable, InvoiceLine
from billing.invoicing.pdf import InvoiceRenderError
from billing.invoicing.services import credit_note_issue, invoice_finalize
from tests.billing.conftest import cost
from tests.billing.smtp import SmtpServer, smtp_server
from tests.factories import IssuerFactory, MembershipFactory, OrganizationFactory, VendorAccountFactory

_ = smtp_server  # the fixture, used by name below

ON = date(2026, 11, 2)
SITE = "https://billing.example.test"
NS = {
    "rsm": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100",
    "ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100",
}
HEADER_EN = "Description Quantity Original amount Exchange rate Tax rate Amount (USD)"


@pytest.fixture(autouse=True)
def _media_and_site(db: Any, settings: Any, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.SITE_URL = SITE


# --- Builders -----------------------------------------------------------------------------------


def _issuer(**fields: Any) -> Issuer:
    defaults: dict[str, Any] = {
        "name": "Operator",
        "legal_name": "Operator Inc.",
        "address": "1 Market Street\nSan Francisco, CA 94105",
        "country": "US",
        "email": "billing@operator.test",
        "bank_details": "Bank: First Test Bank\nAccount: 000123456789",
    }
    return IssuerFactory(**{**defaults, **fields})


def _organization(**fields: Any) -> Organization:
    defaults: dict[str, Any] = {
        "slug": "acme",
        "name": "Acme",
        "legal_name": "Acme Corp",
        "address": "500 Main Road\nSpringfield",
        "country": "US",
        "currency": "USD",
        "billing_email": "ap@acme.test",
    }
    return OrganizationFactory(**{**defaults, **fields})


def _usage(vendor: str, label: str, description: str, amount: str, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "usage",
        "vendor": vendor,
        "vendor_label": label,
        "description": description,
        "amount": Decimal(amount),
        **extra,
    }


def _fee(vendor: str, label: str, amount: str) -> dict[str, Any]:
    return {
        "kind": "fee",
        "vendor": vendor,
        "vendor_label": label,
        "description": f"Service fee on {label}",
        "amount": Decimal(amount),
    }


def _draft(
    organization: Organization,
    issuer: Issuer,
    lines: list[dict[str, Any]],
    *,
    tax_rate: str = "0",
    tax_note: str = "",
    **fields: Any,
) -> Invoice:
    invoice = Invoice.objects.create(
        organization=organization,
        issuer=issuer,
        period_start=date(2026, 10, 1),
        period_end=date(2026, 10, 31),
        currency=organization.currency,
        locale=organization.locale,
        billing_mode="consolidated",
        tax_note=tax_note,
        **fields,
    )
    for position, spec in enumerate(lines, start=1):
        InvoiceLine.objects.create(invoice=invoice, position=position, tax_rate=Decimal(tax_rate), **spec)
    return invoice


def _finalize(invoice: Invoice, capture: Any) -> Invoice:
    """Finalize, and run what finalization queues on commit (the delivery task, eager in tests)."""
    with capture(execute=True) as callbacks:
        invoice_finalize(invoice_id=invoice.pk, on=ON)
    assert len(callbacks) == 1
    return Invoice.objects.get(pk=invoice.pk)


def _stored_pdf(invoice: Invoice) -> bytes:
    with invoice.pdf.open("rb") as stored:
        return stored.read()


def _text(data: bytes, tmp_path: Path, *, first: int | None = None, last: int | None = None) -> str:
    """pdftotext -layout, with runs of blanks collapsed to one space."""
    source = tmp_path / "extract.pdf"
    source.write_bytes(data)
    pages = [*(["-f", str(first)] if first else []), *(["-l", str(last)] if last else [])]
    out = subprocess.run(
        ["pdftotext", "-layout", "-enc", "UTF-8", *pages, str(source), "-"], capture_output=True, check=True, text=True
    ).stdout
    return "\n".join(re.sub(r"[ \t]+", " ", line).strip() for line in out.splitlines())


def _page_number(text: str) -> tuple[int, int]:
    """The footer's "page / pages" (pdftotext drops the thin spaces around the slash)."""
    (found,) = re.findall(r"\b(\d+) ?/ ?(\d+)$", text.strip(), flags=re.MULTILINE)[-1:]
    return int(found[0]), int(found[1])


def _english_invoice(capture: Any) -> Invoice:
    organization = _organization()
    MembershipFactory(organization=organization, role=Role.OWNER, user__email="owner@acme.test")
    lines = [
        _usage(
            "openai",
            "OpenAI",
            "gpt-4o",
            "24.01",
            original_amount=Decimal("30.015"),
            original_currency="EUR",
            rate=Decimal("0.8"),
            quantity=Decimal(8400000),
            unit="tokens",
        ),
        _fee("openai", "OpenAI", "3.00"),
        _usage("anthropic", "Claude", "claude-sonnet", "12.50"),
        {"kind": "adjustment", "description": "Goodwill discount", "amount": Decimal("-1.00")},
    ]
    invoice = _draft(organization, _issuer(), lines, payments_applied=Decimal("10.00"))
    return _finalize(invoice, capture)


# --- PDF content --------------------------------------------------------------------------------


def test_english_invoice_pdf_shows_parties_lines_by_vendor_totals_and_how_to_pay(
    django_capture_on_commit_callbacks: Any, tmp_path: Path
) -> None:
    invoice = _english_invoice(django_capture_on_commit_callbacks)
    assert (invoice.number, invoice.subtotal, invoice.total, invoice.amount_due) == (
        "INV-2026-000001",
        Decimal("38.51"),
        Decimal("38.51"),
        Decimal("28.51"),
    )
    text = _text(_stored_pdf(invoice), tmp_path)
    for expected in [
        "Invoice number INV-2026-000001",
        "Issue date Nov. 2, 2026",
        "Service period Oct. 1, 2026 – Oct. 31, 2026",
        "Due date Nov. 16, 2026",
        "Operator Inc.",
        "1 Market Street",
        "Acme Corp",
        "500 Main Road",
        HEADER_EN,
        "OpenAI",
        "gpt-4o 8,400,000 tokens 30.015 EUR 1 EUR = 0.8 USD 0% 24.01",
        "Service fee 0% 3.00",
        "Subtotal OpenAI 30.015 EUR 27.01",
        "claude-sonnet 0% 12.50",
        "Subtotal Claude 12.50",
        "Adjustments",
        "Goodwill discount 0% -1.00",
        "Subtotal -1.00",
        "Subtotal 38.51 USD",
        "Tax 0.00 USD",
        "Total 38.51 USD",
        "Payments applied -10.00 USD",
        "Amount due 28.51 USD",
        f"Pay online by card or bank transfer: {SITE}/invoices/{invoice.pk}/pay/",
        "Bank: First Test Bank",
        "Account: 000123456789",
        "Please pay by Nov. 16, 2026 and quote the invoice number INV-2026-000001 with your payment.",
        "attached to this PDF as usage-INV-2026-000001.csv",
    ]:
        assert expected in text, expected
    assert _page_number(text) == (1, 1)
    assert "Tax summary" not in text  # no tax regime, no tax


def _japanese_invoice(capture: Any) -> Invoice:
    FxRate.objects.create(date=ON, base="USD", quote="JPY", rate=Decimal("150"), source="manual")
    issuer = _issuer(
        name="オペレーター",
        legal_name="オペレーター株式会社",
        country="JP",
        address="東京都千代田区1-1",
        tax_regime="jp_consumption",
        jp_registration_number="T1234567890123",
        bank_details="みずほ銀行 本店 普通 1234567",
    )
    organization = _organization(legal_name="株式会社アクメ", country="JP", address="大阪府大阪市北区2-2", locale="ja")
    lines = [
        _usage("openai", "OpenAI", "gpt-4o", "30.02"),
        _fee("openai", "OpenAI", "3.00"),
        _usage("anthropic", "Claude", "claude-sonnet", "10.00"),
        _fee("anthropic", "Claude", "1.00"),
    ]
    return _finalize(_draft(organization, issuer, lines, tax_rate="10"), capture)


def test_japanese_qualified_invoice_has_the_labels_registration_number_and_tax_in_yen(
    django_capture_on_commit_callbacks: Any, tmp_path: Path
) -> None:
    invoice = _japanese_invoice(django_capture_on_commit_callbacks)
    # 44.02 × 10% = 4.402 → 4.40 (rounded down, once for the rate); 4.40 USD × 150 = 660 JPY
    assert invoice.tax_breakdown == [
        {"rate": "10", "base": "44.02", "tax": "4.40", "tax_jpy": "660", "jpy_rate": "150"}
    ]
    text = _text(_stored_pdf(invoice), tmp_path)
    for expected in [
        "請求書",
        "適格請求書",
        "登録番号: T1234567890123",
        "請求書番号 INV-2026-000001",
        "発行日 2026年11月2日",
        "請求期間 2026年10月1日 – 2026年10月31日",
        "支払期日 2026年11月16日",
        "オペレーター株式会社",
        "株式会社アクメ 御中",
        "内容 数量 元の金額 換算レート 税率 金額（USD）",
        "サービス手数料 10% 3.00",
        "OpenAI 小計 33.02",
        "Claude 小計 11.00",
        "税率別内訳",
        "10%対象 44.02 USD 4.40 USD 660 JPY",
        "1 USD = 150 JPY",
        "小計 44.02 USD",
        "消費税 4.40 USD",
        "合計 48.42 USD",
        "ご請求金額 48.42 USD",
        "お支払い方法",
        f"{SITE}/invoices/{invoice.pk}/pay/",
        "みずほ銀行 本店 普通 1234567",
    ]:
        assert expected in text, expected


def test_japanese_email_is_localized(django_capture_on_commit_callbacks: Any) -> None:
    invoice = _japanese_invoice(django_capture_on_commit_callbacks)
    (message,) = mail.outbox
    assert message.subject == "【請求書】INV-2026-000001（オペレーター株式会社）"
    assert message.to == ["ap@acme.test"]
    assert "株式会社アクメ 御中" in message.body
    assert "2026年10月1日～2026年10月31日 のAI利用分の請求書 INV-2026-000001 を添付にてお送りします。" in message.body
    assert "ご請求金額: 48.42 USD" in message.body
    assert f"オンラインでのお支払い： {SITE}/invoices/{invoice.pk}/pay/" in message.body


def test_japanese_invoice_without_a_japanese_font_fails_clearly(
    monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    monkeypatch.setattr(pdf, "japanese_font_installed", lambda: False)
    with pytest.raises(InvoiceRenderError) as error:
        _japanese_invoice(django_capture_on_commit_callbacks)
    assert str(error.value) == (
        "No Japanese font is installed: install Debian fonts-noto-cjk (apt-get install fonts-noto-cjk)"
    )
    invoice = Invoice.objects.get()
    assert (invoice.status, invoice.pdf.name, invoice.pdf_sha256, invoice.emailed_at) == ("open", "", "", None)
    assert mail.outbox == []


def test_the_japanese_font_check_asks_fontconfig() -> None:
    pdf.japanese_font_installed.cache_clear()
    assert pdf.japanese_font_installed() is True  # Debian fonts-noto-cjk on this machine
    assert pdf.needs_japanese_font(html="<p>Acme</p>", lang="en") is False
    assert pdf.needs_japanese_font(html="<p>株式会社アクメ</p>", lang="en") is True
    assert pdf.needs_japanese_font(html="<p>Acme</p>", lang="ja") is True


def test_a_long_invoice_repeats_the_table_header_and_numbers_its_pages(
    django_capture_on_commit_callbacks: Any, tmp_path: Path
) -> None:
    lines = [_usage("openai", "OpenAI", f"model-{n:03d}", "1.00") for n in range(1, 201)]
    invoice = _finalize(_draft(_organization(), _issuer(), lines), django_capture_on_commit_callbacks)
    data = _stored_pdf(invoice)
    pages = len(pypdf.PdfReader(io.BytesIO(data)).pages)
    assert pages == 6
    texts = [_text(data, tmp_path, first=n, last=n) for n in range(1, pages + 1)]
    assert [_page_number(text) for text in texts] == [(n, 6) for n in range(1, 7)]
    assert [HEADER_EN in text for text in texts] == [True] * 5 + [False]  # page 6: how to pay only
    assert texts[1].startswith(HEADER_EN + "\nmodel-033 0% 1.00")  # page 2 starts with the repeated header
    assert all("INV-2026-000001" in text for text in texts)  # the number is in every page's footer
    assert "model-200 0% 1.00" in texts[4] and "Amount due 200.00 USD" in texts[4]
    assert texts[5].startswith("How to pay")


# --- E-invoice (Factur-X) -----------------------------------------------------------------------


def _xml_amount(root: Any, path: str) -> Decimal:
    (node,) = root.xpath(path, namespaces=NS)
    return Decimal(node.text)


def _eu_invoice(capture: Any, **organization: Any) -> Invoice:
    issuer = _issuer(
        name="Operator GmbH",
        legal_name="Operator GmbH",
        country="DE",
        address="Hauptstraße 1\n10115 Berlin",
        tax_regime="eu_vat",
        vat_id="DE136695976",
        bank_details="IBAN DE89 3704 0044 0532 0130 00\nBIC COBADEFFXXX",
    )
    defaults = {
        "legal_name": "Acme SAS",
        "country": "FR",
        "tax_id": "FR40303265045",
        "currency": "EUR",
        "address": "1 rue de la Paix\n75002 Paris",
    }
    org = _organization(**{**defaults, **organization})
    from billing.invoicing.tax import tax_decision

    decision = tax_decision(
        regime="eu_vat", issuer_country="DE", customer_country=org.country, customer_tax_id=org.tax_id
    )
    lines = [
        _usage(
            "openai",
            "OpenAI",
            "gpt-4o",
            "24.01",
            original_amount=Decimal("30.015"),
            original_currency="USD",
            rate=Decimal("0.8"),
        ),
        _fee("openai", "OpenAI", "2.40"),
        _usage("anthropic", "Claude", "claude-sonnet", "9.99"),
    ]
    return _finalize(_draft(org, issuer, lines, tax_rate=str(decision.rate), tax_note=decision.note), capture)


def test_eu_reverse_charge_invoice_is_pdfa3_with_a_valid_en16931_facturx_xml(
    django_capture_on_commit_callbacks: Any, tmp_path: Path
) -> None:
    invoice = _eu_invoice(django_capture_on_commit_callbacks)
    data = _stored_pdf(invoice)
    name, xml = facturx.get_facturx_xml_from_pdf(data, check_xsd=True)
    assert name == "factur-x.xml"
    assert facturx.xml_check_xsd(xml, flavor="factur-x", level="en16931") is True
    root = etree.fromstring(xml)
    assert facturx.get_level(root) == "en16931"
    summation = "//ram:SpecifiedTradeSettlementHeaderMonetarySummation"
    assert (invoice.subtotal, invoice.tax_total, invoice.total, invoice.amount_due) == (
        Decimal("36.40"),
        Decimal("0"),
        Decimal("36.40"),
        Decimal("36.40"),
    )
    assert _xml_amount(root, f"{summation}/ram:LineTotalAmount") == invoice.subtotal
    assert _xml_amount(root, f"{summation}/ram:TaxBasisTotalAmount") == invoice.subtotal
    assert _xml_amount(root, f"{summation}/ram:TaxTotalAmount") == invoice.tax_total
    assert _xml_amount(root, f"{summation}/ram:GrandTotalAmount") == invoice.total
    assert _xml_amount(root, f"{summation}/ram:DuePayableAmount") == invoice.amount_due
    assert root.xpath("//rsm:ExchangedDocument/ram:ID/text()", namespaces=NS) == ["INV-2026-000001"]
    assert root.xpath("//ram:InvoiceCurrencyCode/text()", namespaces=NS) == ["EUR"]
    (tax,) = root.xpath("//ram:ApplicableHeaderTradeSettlement/ram:ApplicableTradeTax", namespaces=NS)
    assert [
        tax.findtext(f"ram:{n}", namespaces=NS)
        for n in (
            "CalculatedAmount",
            "BasisAmount",
            "CategoryCode",
            "ExemptionReason",
            "ExemptionReasonCode",
            "RateApplicablePercent",
        )
    ] == ["0.00", "36.40", "AE", "Reverse charge", "VATEX-EU-AE", "0"]
    assert root.xpath("//ram:SellerTradeParty/ram:SpecifiedTaxRegistration/ram:ID/text()", namespaces=NS) == [
        "DE136695976"
    ]
    assert root.xpath("//ram:BuyerTradeParty/ram:SpecifiedTaxRegistration/ram:ID/text()", namespaces=NS) == [
        "FR40303265045"
    ]
    assert root.xpath("//ram:PayeePartyCreditorFinancialAccount/ram:IBANID/text()", namespaces=NS) == [
        "DE89370400440532013000"
    ]
    line_totals = root.xpath("//ram:IncludedSupplyChainTradeLineItem//ram:LineTotalAmount/text()", namespaces=NS)
    assert line_totals == ["24.01", "2.40", "9.99"]

    reader = pypdf.PdfReader(io.BytesIO(data))
    catalog = reader.trailer["/Root"]
    assert sorted(reader.attachments) == ["factur-x.xml", "usage-INV-2026-000001.csv"]
    assert len(catalog["/AF"]) == 2  # one entry per file
    assert catalog["/OutputIntents"][0]["/S"] == "/GTS_PDFA1"
    xmp = catalog["/Metadata"].get_object().get_data().decode()
    assert "<pdfaid:part>3</pdfaid:part>" in xmp and "<fx:ConformanceLevel>EN 16931</fx:ConformanceLevel>" in xmp
    text = _text(data, tmp_path)
    assert "Reverse charge: VAT to be accounted for by the recipient (Art. 196 VAT Directive 2006/112/EC)." in text
    assert "VAT ID: DE136695976" in text and "VAT ID: FR40303265045" in text


def test_eu_domestic_b2c_invoice_states_vat_in_the_facturx_breakdown(
    django_capture_on_commit_callbacks: Any, tmp_path: Path
) -> None:
    invoice = _eu_invoice(
        django_capture_on_commit_callbacks,
        country="DE",
        tax_id="",
        legal_name="Erika Muster",
        address="Musterweg 2\n80331 München",
    )
    assert invoice.tax_breakdown == [{"rate": "19", "base": "36.40", "tax": "6.92"}]
    data = _stored_pdf(invoice)
    root = etree.fromstring(facturx.get_facturx_xml_from_pdf(data, check_xsd=True)[1])
    (tax,) = root.xpath("//ram:ApplicableHeaderTradeSettlement/ram:ApplicableTradeTax", namespaces=NS)
    assert [
        tax.findtext(f"ram:{n}", namespaces=NS)
        for n in ("CalculatedAmount", "BasisAmount", "CategoryCode", "RateApplicablePercent")
    ] == ["6.92", "36.40", "S", "19"]
    summation = "//ram:SpecifiedTradeSettlementHeaderMonetarySummation"
    assert _xml_amount(root, f"{summation}/ram:TaxTotalAmount") == invoice.tax_total == Decimal("6.92")
    assert _xml_amount(root, f"{summation}/ram:GrandTotalAmount") == invoice.total == Decimal("43.32")
    text = _text(data, tmp_path)
    assert "Taxable at 19% 36.40 EUR 6.92 EUR" in text
    assert "VAT 6.92 EUR" in text and "Total 43.32 EUR" in text


def test_eu_vat_in_another_currency_is_also_stated_in_the_national_currency(
    django_capture_on_commit_callbacks: Any, tmp_path: Path
) -> None:
    # Art. 230: a Polish consumer's VAT on a EUR invoice is also stated in PLN at the day's ECB rate.
    FxRate.objects.create(date=ON, base="EUR", quote="PLN", rate=Decimal("4.2500"), source="ecb")
    invoice = _eu_invoice(
        django_capture_on_commit_callbacks,
        country="PL",
        tax_id="",
        legal_name="Jan Kowalski",
        address="ul. Prosta 1\n00-001 Warszawa",
    )
    # 23% of 36.40 EUR = 8.372 -> 8.37 EUR; 8.37 x 4.25 = 35.5725 -> 35.57 PLN.
    (entry,) = invoice.tax_breakdown
    assert Decimal(entry.pop("national_rate")) == Decimal("4.25")
    assert [entry] == [
        {
            "rate": "23",
            "base": "36.40",
            "tax": "8.37",
            "tax_national": "35.57",
            "national_currency": "PLN",
        }
    ]
    data = _stored_pdf(invoice)
    root = etree.fromstring(facturx.get_facturx_xml_from_pdf(data, check_xsd=True)[1])
    assert root.xpath("//ram:TaxCurrencyCode/text()", namespaces=NS) == ["PLN"]
    summation = "//ram:SpecifiedTradeSettlementHeaderMonetarySummation"
    totals = {
        node.get("currencyID"): Decimal(node.text)
        for node in root.xpath(f"{summation}/ram:TaxTotalAmount", namespaces=NS)
    }
    assert totals == {"EUR": Decimal("8.37"), "PLN": Decimal("35.57")}
    text = _text(data, tmp_path)
    assert "VAT in PLN" in text
    assert "8.37 EUR 35.57 PLN" in text and "1 EUR = 4.25 PLN" in text


def test_eu_vat_in_the_national_currency_needs_the_days_rate(
    django_capture_on_commit_callbacks: Any,
) -> None:
    from billing.invoicing.services import InvoiceError

    with pytest.raises(InvoiceError, match="Cannot state the tax in PLN"):
        _eu_invoice(django_capture_on_commit_callbacks, country="PL", tax_id="", legal_name="Jan Kowalski")


def test_eu_issuer_outside_eu_customer_gets_category_o_without_vat_ids(
    django_capture_on_commit_callbacks: Any, tmp_path: Path
) -> None:
    invoice = _eu_invoice(
        django_capture_on_commit_callbacks,
        country="US",
        tax_id="12-3456789",
        currency="USD",
        legal_name="Acme Corp",
        address="500 Main Road\nSpringfield",
    )
    root = etree.fromstring(facturx.get_facturx_xml_from_pdf(_stored_pdf(invoice), check_xsd=True)[1])
    (tax,) = root.xpath("//ram:ApplicableHeaderTradeSettlement/ram:ApplicableTradeTax", namespaces=NS)
    assert [
        tax.findtext(f"ram:{n}", namespaces=NS)
        for n in ("CalculatedAmount", "BasisAmount", "CategoryCode", "ExemptionReasonCode")
    ] == ["0.00", "36.40", "O", "VATEX-EU-O"]
    assert root.xpath("//ram:SpecifiedTaxRegistration", namespaces=NS) == []  # BR-O-02
    assert root.xpath("//ram:SellerTradeParty/ram:ID/text()", namespaces=NS) == ["DE136695976"]  # BR-CO-26
    assert root.xpath("//ram:InvoiceCurrencyCode/text()", namespaces=NS) == ["USD"]
    assert "Service outside the scope of EU VAT (place of supply: the customer's country, Art. 44)." in _text(
        _stored_pdf(invoice), tmp_path
    )


# --- Usage CSV and storage ----------------------------------------------------------------------


def test_every_invoice_carries_its_usage_csv_and_its_sha256(
    django_capture_on_commit_callbacks: Any, organization: Organization
) -> None:
    account = VendorAccountFactory(organization=_organization(slug="acme-2"), vendor="openai", label="OpenAI")
    cost(account, date(2026, 10, 1), "1.50", key="first-day")
    cost(account, date(2026, 10, 31), "2.25", key="last-day")
    cost(account, date(2026, 11, 1), "99.00", key="next-period")
    cost(VendorAccountFactory(organization=organization), date(2026, 10, 5), "7.00", key="other-organization")
    invoice = _finalize(
        _draft(account.organization, _issuer(), [_usage("openai", "OpenAI", "gpt-4o", "3.75")]),
        django_capture_on_commit_callbacks,
    )
    data = _stored_pdf(invoice)
    assert hashlib.sha256(data).hexdigest() == invoice.pdf_sha256
    assert invoice.pdf.name.startswith("invoices/") and invoice.pdf.name.endswith("/INV-2026-000001.pdf")
    (attached,) = pypdf.PdfReader(io.BytesIO(data)).attachments["usage-INV-2026-000001.csv"]
    assert attached == invoice_usage_csv(invoice=invoice)
    rows = list(csv.DictReader(io.StringIO(attached.decode())))
    assert [(r["ChargePeriodStart"], r["BilledCost"], r["BillingCurrency"], r["ServiceName"]) for r in rows] == [
        ("2026-10-01T00:00:00Z", "1.5", "USD", "gpt-4o"),
        ("2026-10-31T00:00:00Z", "2.25", "USD", "gpt-4o"),
    ]
    assert list(rows[0])[:4] == ["BillingAccountId", "BillingAccountName", "SubAccountId", "ProviderName"]


def test_delivery_renders_once_and_a_finalized_invoice_stays_immutable(
    django_capture_on_commit_callbacks: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    invoice = _english_invoice(django_capture_on_commit_callbacks)
    stored = (invoice.pdf.name, invoice.pdf_sha256, invoice.emailed_at)
    monkeypatch.setattr(delivery, "invoice_pdf_render", lambda **_: pytest.fail("rendered twice"))
    invoice_deliver(invoice_id=invoice.pk)
    invoice.refresh_from_db()
    assert (invoice.pdf.name, invoice.pdf_sha256, invoice.emailed_at) == stored
    assert len(mail.outbox) == 1
    invoice.total = Decimal("1.00")
    with pytest.raises(InvoiceImmutable, match="total cannot change"):
        invoice.save()
    with pytest.raises(InvoiceImmutable, match="subtotal cannot change"):
        invoice.save(update_fields=["subtotal", "pdf"])
    assert Invoice.objects.get(pk=invoice.pk).total == Decimal("38.51")


def test_a_draft_is_not_delivered(organization: Organization) -> None:
    draft = _draft(organization, _issuer(), [_usage("openai", "OpenAI", "gpt-4o", "1.00")])
    invoice_deliver(invoice_id=draft.pk)
    draft.refresh_from_db()
    assert (draft.pdf.name, draft.emailed_at, mail.outbox) == ("", None, [])


# --- Email --------------------------------------------------------------------------------------


def test_the_invoice_is_emailed_once_over_smtp_with_the_pdf_and_resent_on_request(
    smtp_server: SmtpServer, django_capture_on_commit_callbacks: Any
) -> None:
    invoice = _english_invoice(django_capture_on_commit_callbacks)  # also queues and runs the delivery
    invoice_deliver(invoice_id=invoice.pk)  # a redelivered task
    invoice_deliver(invoice_id=invoice.pk)
    assert invoice_email_send(invoice_id=invoice.pk) is False
    (received,) = smtp_server.received
    assert received.mail_from == "billing@localhost"
    assert sorted(received.rcpt_tos) == ["ap@acme.test", "owner@acme.test"]
    message = received.message
    assert message["Subject"] == "Invoice INV-2026-000001 from Operator Inc."
    assert message["Reply-To"] == "billing@operator.test"
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    pay_url = f"{SITE}/invoices/{invoice.pk}/pay/"
    assert "Please find attached invoice INV-2026-000001 for the AI usage of Oct. 1, 2026 – Oct. 31, 2026." in text
    assert "Amount due: 28.51 USD" in text and f"Pay online: {pay_url}" in text
    assert f'href="{pay_url}"' in html and "Dear Acme Corp," in html
    (attachment,) = list(message.iter_attachments())
    assert (attachment.get_filename(), attachment.get_content_type()) == ("INV-2026-000001.pdf", "application/pdf")
    assert attachment.get_content() == _stored_pdf(invoice)
    first_sent = Invoice.objects.get(pk=invoice.pk).emailed_at
    assert first_sent is not None

    assert invoice_email_send(invoice_id=invoice.pk, resend=True) is True
    assert len(smtp_server.received) == 2
    assert Invoice.objects.get(pk=invoice.pk).emailed_at > first_sent


def test_a_failed_smtp_send_is_not_marked_and_goes_out_on_the_next_delivery(
    smtp_server: SmtpServer, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from celery.exceptions import Retry

    settings.EMAIL_PORT = _closed_port()
    # The delivery task schedules a retry (eager here, so Retry surfaces) after the refused send.
    with pytest.raises((ConnectionRefusedError, Retry)):
        _english_invoice(django_capture_on_commit_callbacks)
    invoice = Invoice.objects.get()
    assert invoice.pdf_sha256 and invoice.emailed_at is None  # PDF kept, email not marked
    settings.EMAIL_PORT = smtp_server.port
    invoice_deliver(invoice_id=invoice.pk)
    assert len(smtp_server.received) == 1
    assert Invoice.objects.get(pk=invoice.pk).emailed_at is not None


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- Credit note --------------------------------------------------------------------------------


def test_credit_note_pdf_refers_to_the_invoice(django_capture_on_commit_callbacks: Any, tmp_path: Path) -> None:
    invoice = _english_invoice(django_capture_on_commit_callbacks)
    note = credit_note_issue(invoice_id=invoice.pk, amount=Decimal("5.00"), reason="Duplicate usage on Oct. 3")
    text = _text(credit_note_pdf_render(credit_note=note), tmp_path)
    for expected in [
        "Credit note",
        "Credit note number CN-2026-000001",
        "Invoice number INV-2026-000001",
        "Invoice date Nov. 2, 2026",
        "Duplicate usage on Oct. 3",
        "Total credited 5.00 USD",
        "This credit note corrects invoice INV-2026-000001.",
    ]:
        assert expected in text, expected


def test_render_functions_are_pure_reads(django_capture_on_commit_callbacks: Any) -> None:
    invoice = _english_invoice(django_capture_on_commit_callbacks)
    before = Invoice.objects.filter(pk=invoice.pk).values().get()
    assert invoice_pdf_render(invoice=invoice).startswith(b"%PDF-")
    assert Invoice.objects.filter(pk=invoice.pk).values().get() == before


def test_customer_text_is_printed_as_text_and_documents_load_no_url(
    django_capture_on_commit_callbacks: Any, tmp_path: Path
) -> None:
    hostile = '<img src="file:///etc/passwd">Evil & Co'
    invoice = _draft(_organization(legal_name=hostile), _issuer(), [_usage("openai", "OpenAI", "gpt-4o", "1.00")])
    invoice = _finalize(invoice, django_capture_on_commit_callbacks)
    assert hostile in _text(_stored_pdf(invoice), tmp_path)
    with pytest.raises(InvoiceRenderError, match="load no external resource"):
        pdf.html_to_pdf('<p>x</p><img src="file:///etc/passwd">', lang="en")

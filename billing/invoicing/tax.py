"""Tax per issuer regime: none, EU VAT (reverse charge for valid B2B VAT ids across borders), or
Japanese consumption tax on a qualified invoice. Tax is computed once per rate per invoice."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from stdnum.eu import vat as eu_vat

from aggregator.money import RoundingMode, quantize

# Standard VAT rates (percent) of the EU member states. Confirm with a tax adviser before use.
EU_VAT_RATES: dict[str, Decimal] = {
    code: Decimal(rate)
    for code, rate in {
        "AT": "20",
        "BE": "21",
        "BG": "20",
        "CY": "19",
        "CZ": "21",
        "DE": "19",
        "DK": "25",
        "EE": "24",
        "ES": "21",
        "FI": "25.5",
        "FR": "20",
        "GR": "24",
        "HR": "25",
        "HU": "27",
        "IE": "23",
        "IT": "22",
        "LT": "21",
        "LU": "17",
        "LV": "21",
        "MT": "18",
        "NL": "21",
        "PL": "23",
        "PT": "23",
        "RO": "21",
        "SE": "25",
        "SI": "22",
        "SK": "23",
    }.items()
}
# Member states outside the euro area keep their own currency (Bulgaria joined the euro on
# 2026-01-01). Art. 230 VAT Directive: VAT payable is stated in the national currency of the member
# state of supply, whatever the invoice currency.
EU_NON_EURO_CURRENCIES: dict[str, str] = {
    "CZ": "CZK",
    "DK": "DKK",
    "HU": "HUF",
    "PL": "PLN",
    "RO": "RON",
    "SE": "SEK",
}
JP_CONSUMPTION_RATE = Decimal(10)
REVERSE_CHARGE_NOTE = "Reverse charge: VAT to be accounted for by the recipient (Art. 196 VAT Directive 2006/112/EC)."
OUTSIDE_EU_NOTE = "Service outside the scope of EU VAT (place of supply: the customer's country, Art. 44)."


def eu_national_currency(country: str) -> str:
    """The currency in which VAT payable in ``country`` (an EU member state) is stated."""
    return EU_NON_EURO_CURRENCIES.get(country, "EUR")


@dataclass(frozen=True)
class TaxDecision:
    rate: Decimal  # percent
    note: str = ""


def vat_id_is_valid(vat_id: str) -> bool:
    """Well-formed EU VAT id (country prefix, format and check digits); not a VIES lookup."""
    return bool(vat_id) and eu_vat.is_valid(vat_id)


def tax_decision(*, regime: str, issuer_country: str, customer_country: str, customer_tax_id: str) -> TaxDecision:
    if regime == "jp_consumption":
        return TaxDecision(JP_CONSUMPTION_RATE)
    if regime != "eu_vat":
        return TaxDecision(Decimal(0))
    if customer_country not in EU_VAT_RATES:
        return TaxDecision(Decimal(0), OUTSIDE_EU_NOTE)
    b2b = vat_id_is_valid(customer_tax_id)
    if b2b and customer_country != issuer_country:
        return TaxDecision(Decimal(0), REVERSE_CHARGE_NOTE)
    # Domestic B2B, or B2C e-services taxed where the consumer lives.
    return TaxDecision(EU_VAT_RATES[customer_country])


@dataclass(frozen=True)
class TaxLine:
    rate: Decimal
    base: Decimal
    tax: Decimal


def tax_by_rate(*, lines: list[tuple[Decimal, Decimal]], currency: str, rounding: RoundingMode) -> list[TaxLine]:
    """Tax once per rate over the sum of the (already rounded) line amounts at that rate."""
    bases: dict[Decimal, Decimal] = defaultdict(Decimal)
    for amount, rate in lines:
        bases[rate] += amount
    return [
        TaxLine(rate, base, quantize(base * rate / 100, currency, rounding=rounding))
        for rate, base in sorted(bases.items())
    ]

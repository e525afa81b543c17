"""``{{ amount|money:currency }}``: an amount as printed on invoices (``1,234.56 USD``, ``600 JPY``)."""

from __future__ import annotations

from decimal import Decimal

from django import template

from billing.invoicing.delivery import money as format_money

register = template.Library()


@register.filter
def money(value: Decimal | None, currency: str) -> str:
    if value is None:
        return ""
    return format_money(Decimal(value), currency)

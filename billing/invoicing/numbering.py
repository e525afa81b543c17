"""Gapless document numbers: a counter row per (issuer, kind, year), locked while a number is taken
inside the finalizing transaction, so a rolled-back finalization gives its number back."""

from __future__ import annotations

from datetime import date

from django.db import IntegrityError, transaction

from aggregator.tenancy.models import Issuer
from billing.invoicing.models import NumberSeries


def document_number_next(*, issuer: Issuer, kind: str, on: date) -> str:
    """Take the next number of the series. Must run inside the transaction that uses it."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("Take document numbers inside the transaction that stores the document.")
    pattern = issuer.invoice_pattern if kind == NumberSeries.Kind.INVOICE else issuer.credit_note_pattern
    year = on.year if "{YYYY}" in pattern else 0
    series = _series(issuer, kind, year, pattern)
    locked = NumberSeries.objects.select_for_update().get(pk=series.pk)
    locked.last_value += 1
    locked.save(update_fields=["last_value"])
    return pattern.format(YYYY=f"{on.year:04d}", MM=f"{on.month:02d}", seq=locked.last_value)


def _series(issuer: Issuer, kind: str, year: int, pattern: str) -> NumberSeries:
    existing = NumberSeries.objects.filter(issuer=issuer, kind=kind, year=year).first()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            return NumberSeries.objects.create(issuer=issuer, kind=kind, year=year, pattern=pattern)
    except IntegrityError:  # created by a concurrent finalization
        return NumberSeries.objects.get(issuer=issuer, kind=kind, year=year)

"""Portal: the usage explorer. Cost records filtered by vendor, model, project and dates, with
totals per currency, a breakdown, a daily chart, and CSV and FOCUS exports of the same selection."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from django import forms
from django.db.models import Count, QuerySet, Sum
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from aggregator.portal.access import PortalView
from aggregator.tenancy.scoping import scoped
from providers.focus import focus_csv_lines
from providers.models import CostRecord
from providers.selectors import cost_records_filter, costs_daily

DEFAULT_DAYS = 30
GROUPS = {"vendor": "vendor", "model": "service_name", "project": "project", "account": "vendor_account__label"}
CHART_COLORS = ["#2952cc", "#d97706", "#059669", "#9333ea", "#dc2626", "#0891b2", "#4b5563"]


class UsageFilterForm(forms.Form):
    vendor = forms.ChoiceField(label=gettext_lazy("Vendor"), required=False)
    model = forms.ChoiceField(label=gettext_lazy("Model"), required=False)
    project = forms.ChoiceField(label=gettext_lazy("Project"), required=False)
    start = forms.DateField(label=gettext_lazy("From"), required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(label=gettext_lazy("To"), required=False, widget=forms.DateInput(attrs={"type": "date"}))
    group_by = forms.ChoiceField(
        label=gettext_lazy("Break down by"),
        required=False,
        choices=[
            ("vendor", gettext_lazy("Vendor")),
            ("model", gettext_lazy("Model")),
            ("project", gettext_lazy("Project")),
            ("account", gettext_lazy("Account")),
        ],
    )

    def __init__(self, *args: Any, records: QuerySet[CostRecord], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        everything = [("", _("All"))]
        for name, column in (("vendor", "vendor"), ("model", "service_name"), ("project", "project")):
            values = records.order_by(column).values_list(column, flat=True).distinct()
            field = self.fields[name]
            assert isinstance(field, forms.ChoiceField)
            field.choices = everything + [(v, v) for v in values if v]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        start, end = data.get("start"), data.get("end")
        if start and end and end < start:
            self.add_error("end", _("The end date must be on or after the start date."))
        return data

    def selection(self, today: date) -> dict[str, Any]:
        """The filters to apply (the last 30 days when no date is given)."""
        data = self.cleaned_data if self.is_bound and self.is_valid() else {}
        end = data.get("end") or (today if not data.get("start") else None)
        start = data.get("start") or (today - timedelta(days=DEFAULT_DAYS - 1) if not data.get("end") else None)
        return {
            "vendor": data.get("vendor") or None,
            "model": data.get("model") or None,
            "project": data.get("project") or None,
            "start": start,
            "end": end,
        }


def _filtered(view: PortalView, request: HttpRequest) -> tuple[UsageFilterForm, QuerySet[CostRecord], dict[str, Any]]:
    everything = scoped(CostRecord, view.organization)
    today = timezone.now().date()
    default = {"start": today - timedelta(days=DEFAULT_DAYS - 1), "end": today, "group_by": "vendor"}
    form = UsageFilterForm(request.GET or None, records=everything, initial=default)
    selection = form.selection(today)
    records = cost_records_filter(organization=view.organization, **selection)
    return form, records, selection


class UsageView(PortalView):
    def get(self, request: HttpRequest) -> HttpResponse:
        form, records, selection = _filtered(self, request)
        group_by = (form.cleaned_data.get("group_by") if form.is_bound and form.is_valid() else None) or "vendor"
        column = GROUPS[group_by]
        totals = list(
            records.values("billing_currency")
            .annotate(total=Sum("billed_cost"), rows=Count("id"))
            .order_by("billing_currency")
        )
        breakdown = list(
            records.values(column, "billing_currency")
            .annotate(total=Sum("billed_cost"))
            .order_by("billing_currency", "-total", column)
        )
        rows = [{"name": r[column], "currency": r["billing_currency"], "total": r["total"]} for r in breakdown]
        daily = costs_daily(records=records, group_by="vendor")
        return render(
            request,
            "portal/usage/usage.html",
            self.base_context(
                form=form,
                selection=selection,
                totals=totals,
                breakdown=rows,
                group_by=group_by,
                chart=_chart(daily),
                query=request.GET.urlencode(),
            ),
            status=400 if form.is_bound and form.errors else 200,
        )


def _chart(daily: list[dict[str, Any]]) -> dict[str, Any]:
    """Bars per day, stacked by vendor, in the most used currency (mixing currencies in one bar
    would add unlike amounts)."""
    if not daily:
        return {"bars": [], "legend": [], "currency": ""}
    per_currency: dict[str, Decimal] = {}
    for row in daily:
        per_currency[row["billing_currency"]] = (
            per_currency.get(row["billing_currency"], Decimal(0)) + row["billed_cost"]
        )
    currency = max(per_currency, key=lambda c: per_currency[c])
    by_day: dict[date, dict[str, Decimal]] = {}
    for row in daily:
        if row["billing_currency"] == currency:
            by_day.setdefault(row["date"], {})[row["vendor"]] = row["billed_cost"]
    vendors = sorted({v for amounts in by_day.values() for v in amounts})
    colors = {v: CHART_COLORS[i % len(CHART_COLORS)] for i, v in enumerate(vendors)}
    peak = max((sum(a.values()) for a in by_day.values()), default=Decimal(0)) or Decimal(1)
    bars = [
        {
            "day": day,
            "total": sum(amounts.values()),
            "segments": [
                {"vendor": v, "amount": a, "color": colors[v], "height": float(a / peak * 100)}
                for v, a in sorted(amounts.items())
            ],
        }
        for day, amounts in sorted(by_day.items())
    ]
    return {"bars": bars, "legend": list(colors.items()), "currency": currency}


class _Echo:
    def write(self, value: str) -> str:
        return value


def _cell(value: str) -> str:
    # Spreadsheets run cells that start like a formula; vendors' model and project names are not ours.
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def usage_csv_lines(*, records: QuerySet[CostRecord]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(
        ["date", "vendor", "account", "model", "description", "project", "quantity", "unit", "billed_cost",
         "currency"]
    )  # fmt: skip
    rows = records.select_related("vendor_account").order_by("charge_period_start", "id")
    for r in rows.iterator(chunk_size=2000):
        yield writer.writerow(
            [
                r.charge_period_start.date().isoformat(),
                r.vendor,
                _cell(r.vendor_account.label),
                _cell(r.service_name),
                _cell(r.charge_description),
                _cell(r.project),
                "" if r.consumed_quantity is None else format(Decimal(r.consumed_quantity).normalize(), "f"),
                r.consumed_unit,
                format(Decimal(r.billed_cost).normalize(), "f"),
                r.billing_currency,
            ]
        )


def _download(lines: Iterator[str], name: str, selection: dict[str, Any]) -> StreamingHttpResponse:
    dates = "-".join(d.isoformat() for d in (selection["start"], selection["end"]) if d)
    response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}{"-" + dates if dates else ""}.csv"'
    return response


class UsageCsvView(PortalView):
    """The selected cost records as a plain CSV, one row per record."""

    def get(self, request: HttpRequest) -> StreamingHttpResponse:
        _form, records, selection = _filtered(self, request)
        return _download(usage_csv_lines(records=records), f"costs-{self.organization.slug}", selection)


class UsageFocusView(PortalView):
    """The selected cost records in FinOps FOCUS columns (the same export as the API)."""

    def get(self, request: HttpRequest) -> StreamingHttpResponse:
        _form, records, selection = _filtered(self, request)
        return _download(focus_csv_lines(records=records), f"focus-{self.organization.slug}", selection)

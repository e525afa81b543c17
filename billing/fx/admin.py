"""FX rates in the operator console: ECB rates are the published record (view only); operators add,
correct and remove manual rates, each change audited through billing.fx.services."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from aggregator.money import CurrencyError, currency_code
from aggregator.tenancy.admin_base import ModelAdmin
from aggregator.tenancy.models import User
from billing.fx.models import FxRate
from billing.fx.services import fx_rate_delete_manual, fx_rate_set_manual

_KEY_FIELDS = ["date", "base", "quote"]
_ALL_FIELDS = [*_KEY_FIELDS, "rate", "source", "created_by", "created_at"]


def _operator(request: HttpRequest) -> User | None:
    return request.user if isinstance(request.user, User) else None


class FxRateForm(forms.ModelForm[FxRate]):
    class Meta:
        model = FxRate
        fields = [*_KEY_FIELDS, "rate"]
        help_texts = {"rate": "How many units of the quote currency one unit of the base currency buys."}

    def _clean_currency(self, name: str) -> str:
        try:
            return currency_code(self.cleaned_data[name])
        except CurrencyError as exc:
            raise ValidationError(str(exc)) from None

    def clean_base(self) -> str:
        return self._clean_currency("base")

    def clean_quote(self) -> str:
        return self._clean_currency("quote")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        key = [cleaned.get(name) for name in _KEY_FIELDS]
        # The unique constraint includes ``source``, which the form does not show, so Django skips it.
        if self.instance.pk is None and all(key):
            day, base, quote = key
            if FxRate.objects.filter(date=day, base=base, quote=quote, source=FxRate.Source.MANUAL).exists():
                raise ValidationError(
                    f"A manual {base}/{quote} rate for {day} exists already: open it from the list and change its rate."
                )
        return cleaned


@admin.register(FxRate)
class FxRateAdmin(ModelAdmin):
    form = FxRateForm
    list_display = ["date", "base", "quote", "rate", "source", "created_by"]
    list_filter = ["source", "base", "quote", "date"]
    search_fields = ["base", "quote"]
    date_hierarchy = "date"
    list_select_related = ["created_by"]

    def get_fields(self, request: HttpRequest, obj: FxRate | None = None) -> tuple[str, ...]:
        return (*_KEY_FIELDS, "rate") if obj is None else tuple(_ALL_FIELDS)

    def get_readonly_fields(self, request: HttpRequest, obj: FxRate | None = None) -> list[str]:
        # An existing manual rate keeps its day and pair: only the rate itself can be corrected.
        return [] if obj is None else [name for name in _ALL_FIELDS if name != "rate"]

    def has_change_permission(self, request: HttpRequest, obj: FxRate | None = None) -> bool:
        if obj is not None and obj.source != FxRate.Source.MANUAL:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: FxRate | None = None) -> bool:
        if obj is not None and obj.source != FxRate.Source.MANUAL:
            return False
        return super().has_delete_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: FxRate, form: Any, change: bool) -> None:
        # Through the service, so the source is always manual, created_by is set and an audit row is kept.
        row = fx_rate_set_manual(day=obj.date, base=obj.base, quote=obj.quote, rate=obj.rate, actor=_operator(request))
        obj.pk = row.pk
        obj.source = row.source
        obj.created_by = row.created_by
        obj.created_at = row.created_at
        obj._state.adding = False

    def delete_model(self, request: HttpRequest, obj: FxRate) -> None:
        fx_rate_delete_manual(fx_rate=obj, actor=_operator(request))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[FxRate]) -> None:
        # The delete action refuses a selection with ECB rows (has_delete_permission), so all are manual.
        for fx_rate in queryset:
            fx_rate_delete_manual(fx_rate=fx_rate, actor=_operator(request))

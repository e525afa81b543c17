from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest

from aggregator.tenancy.admin_base import AuditedModelAdmin, ReadOnlyModelAdmin, ReadOnlyTabularInline, admin_user
from billing.ledger.models import (
    CreditPurchase,
    LedgerAccount,
    LedgerEntry,
    LedgerTransaction,
    Reconciliation,
    VendorFee,
)


class ReadOnlyAdmin(ReadOnlyModelAdmin):
    """The ledger is append-only: operators read it; money moves only through services."""


@admin.register(LedgerAccount)
class LedgerAccountAdmin(ReadOnlyAdmin):
    list_display = ["key", "kind", "currency", "balance", "organization", "vendor_account"]
    list_filter = ["kind", "currency"]
    list_select_related = ["organization", "vendor_account"]
    search_fields = ["key", "organization__slug"]


class LedgerEntryInline(ReadOnlyTabularInline):
    model = LedgerEntry
    fields = ("account", "amount", "currency", "effective_at")
    readonly_fields = ("account", "amount", "currency", "effective_at")
    show_change_link = False


@admin.register(LedgerTransaction)
class LedgerTransactionAdmin(ReadOnlyAdmin):
    list_display = ["effective_at", "kind", "organization", "vendor_account", "settlement_day", "description"]
    list_filter = ["kind"]
    list_select_related = ["organization", "vendor_account"]
    search_fields = ["idempotency_key", "description", "organization__slug"]
    date_hierarchy = "effective_at"
    inlines = [LedgerEntryInline]


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ["effective_at", "account", "amount", "currency", "transaction"]
    list_filter = ["currency", "account__kind"]
    list_select_related = ["account", "transaction"]
    search_fields = ["account__key", "transaction__idempotency_key"]


class CreditPurchaseForm(forms.ModelForm):
    class Meta:
        model = CreditPurchase
        fields = ["vendor_account", "kind", "amount", "currency", "effective_at", "expires_at", "note"]


@admin.register(CreditPurchase)
class CreditPurchaseAdmin(ReadOnlyAdmin):
    """Operators record purchases and grants here (through the service, which posts to the ledger);
    recorded ones are read-only."""

    form = CreditPurchaseForm
    list_display = ["vendor_account", "kind", "amount", "currency", "effective_at", "expires_at", "expired_amount"]
    list_filter = ["kind", "currency"]
    list_select_related = ["vendor_account"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.has_perm("billing.add_creditpurchase"))

    def save_model(self, request: HttpRequest, obj: CreditPurchase, form: Any, change: bool) -> None:
        from billing.ledger.services import LedgerInputError, credit_purchase_record

        data = form.cleaned_data
        try:
            created = credit_purchase_record(
                vendor_account=data["vendor_account"],
                amount=data["amount"],
                currency=data["currency"],
                kind=data["kind"],
                effective_at=data["effective_at"],
                expires_at=data.get("expires_at"),
                note=data.get("note", ""),
                actor=admin_user(request),
            )
        except LedgerInputError as exc:
            messages.error(request, str(exc))
            return
        obj.pk, obj._state.adding = created.pk, False


@admin.register(Reconciliation)
class ReconciliationAdmin(ReadOnlyAdmin):
    list_display = ["observation", "ledger_balance", "drift", "tolerance", "flagged", "created_at"]
    list_filter = ["flagged"]


@admin.register(VendorFee)
class VendorFeeAdmin(AuditedModelAdmin):
    list_display = ["organization", "vendor", "percent"]

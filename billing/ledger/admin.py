from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from billing.ledger.models import (
    CreditPurchase,
    LedgerAccount,
    LedgerEntry,
    LedgerTransaction,
    Reconciliation,
    VendorFee,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """The ledger is append-only: operators read it; money moves only through services."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(LedgerAccount)
class LedgerAccountAdmin(ReadOnlyAdmin):
    list_display = ["key", "kind", "currency", "balance", "organization"]
    list_filter = ["kind", "currency"]
    search_fields = ["key", "organization__slug"]


class LedgerEntryInline(admin.TabularInline):
    model = LedgerEntry
    fields = ("account", "amount", "currency", "effective_at")
    readonly_fields = ("account", "amount", "currency", "effective_at")
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(LedgerTransaction)
class LedgerTransactionAdmin(ReadOnlyAdmin):
    list_display = ["effective_at", "kind", "organization", "vendor_account", "settlement_day", "description"]
    list_filter = ["kind"]
    search_fields = ["idempotency_key", "description", "organization__slug"]
    inlines = [LedgerEntryInline]


@admin.register(CreditPurchase)
class CreditPurchaseAdmin(ReadOnlyAdmin):
    list_display = ["vendor_account", "kind", "amount", "currency", "effective_at", "expires_at", "expired_amount"]
    list_filter = ["kind", "currency"]


@admin.register(Reconciliation)
class ReconciliationAdmin(ReadOnlyAdmin):
    list_display = ["observation", "ledger_balance", "drift", "tolerance", "flagged", "created_at"]
    list_filter = ["flagged"]


@admin.register(VendorFee)
class VendorFeeAdmin(admin.ModelAdmin):
    list_display = ["organization", "vendor", "percent"]

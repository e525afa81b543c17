from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from aggregator.tenancy.admin import admin_user
from billing.invoicing import services
from billing.invoicing.models import CreditNote, Invoice, InvoiceLine, NumberSeries


class InvoiceLineInline(admin.TabularInline):
    model = InvoiceLine
    extra = 0
    fields = (
        "kind",
        "vendor_label",
        "description",
        "quantity",
        "unit",
        "original_amount",
        "original_currency",
        "amount",
        "tax_rate",
    )

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is not None and obj.is_draft

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is not None and obj.is_draft

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is not None and obj.is_draft


@admin.register(Invoice)
class InvoiceAdmin(admin.ModelAdmin):
    list_display = ["__str__", "organization", "period_start", "status", "total", "amount_due", "currency"]
    list_filter = ["status", "currency"]
    search_fields = ["number", "organization__slug", "organization__name"]
    inlines = [InvoiceLineInline]
    actions = ["finalize", "void", "resend"]

    def get_readonly_fields(self, request: HttpRequest, obj: Invoice | None = None) -> list[str]:
        if obj is not None and not obj.is_draft:
            return [f.name for f in Invoice._meta.fields]
        return [
            "number",
            "status",
            "subtotal",
            "tax_total",
            "total",
            "amount_due",
            "amount_paid",
            "pdf",
            "pdf_sha256",
            "finalized_at",
            "emailed_at",
            "customer",
            "issuer_snapshot",
            "tax_breakdown",
        ]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is not None and obj.is_draft

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        super().save_formset(request, form, formset, change)
        if form.instance.is_draft:
            services.invoice_totals_refresh(invoice=form.instance)

    def _each(self, request: HttpRequest, queryset: QuerySet[Invoice], fn: Any, done: str) -> None:
        for invoice in queryset:
            try:
                fn(invoice)
            except services.InvoiceError as exc:
                self.message_user(request, f"{invoice}: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"{invoice}: {done}.")

    @admin.action(description="Finalize selected drafts")
    def finalize(self, request: HttpRequest, queryset: QuerySet[Invoice]) -> None:
        self._each(
            request,
            queryset,
            lambda i: services.invoice_finalize(invoice_id=i.pk, actor=admin_user(request)),
            "finalized",
        )

    @admin.action(description="Void selected invoices")
    def void(self, request: HttpRequest, queryset: QuerySet[Invoice]) -> None:
        self._each(
            request, queryset, lambda i: services.invoice_void(invoice_id=i.pk, actor=admin_user(request)), "voided"
        )

    @admin.action(description="Resend the invoice email")
    def resend(self, request: HttpRequest, queryset: QuerySet[Invoice]) -> None:
        from billing.invoicing.delivery import invoice_email_send

        self._each(request, queryset, lambda i: invoice_email_send(invoice_id=i.pk, resend=True), "email sent")


@admin.register(CreditNote)
class CreditNoteAdmin(admin.ModelAdmin):
    list_display = ["number", "invoice", "amount", "reason", "issue_date"]
    search_fields = ["number", "invoice__number"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(NumberSeries)
class NumberSeriesAdmin(admin.ModelAdmin):
    list_display = ["issuer", "kind", "year", "pattern", "last_value"]
    readonly_fields = ["last_value"]

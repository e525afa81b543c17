"""Operator console: invoices (draft edits, finalize, void, credit notes, resend), credit notes and
number series. Each money action needs its own permission (finance role) and leaves an audit row."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from unfold.decorators import action
from unfold.widgets import UnfoldAdminDecimalFieldWidget, UnfoldAdminTextInputWidget, UnfoldBooleanWidget

from aggregator.tenancy.admin_base import (
    AuditedModelAdmin,
    ReadOnlyModelAdmin,
    TabularInline,
    action_page,
    admin_audit,
    admin_user,
    change_page,
    require_permission,
)
from billing.invoicing import services
from billing.invoicing.delivery import money
from billing.invoicing.models import CreditNote, Invoice, InvoiceLine, NumberSeries
from billing.invoicing.pdf import InvoiceRenderError

FINALIZE = "billing.finalize_invoice"
VOID = "billing.void_invoice"
CREDIT = "billing.issue_credit_note"
RESEND = "billing.resend_invoice"
REFUND = "billing.refund_payment"


class InvoiceLineInline(TabularInline):
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
        return obj is not None and obj.is_draft and super().has_add_permission(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is not None and obj.is_draft and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is not None and obj.is_draft and super().has_delete_permission(request, obj)


class OverdueFilter(admin.SimpleListFilter):
    title = _("overdue")
    parameter_name = "overdue"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [("yes", _("Overdue"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Invoice]) -> QuerySet[Invoice]:
        if self.value() == "yes":
            return queryset.filter(
                status__in=[Invoice.Status.OPEN, Invoice.Status.PARTIALLY_PAID], due_date__lt=timezone.now().date()
            )
        return queryset


class CreditNoteForm(forms.Form):
    amount = forms.DecimalField(
        min_value=Decimal("0.01"),
        decimal_places=10,
        widget=UnfoldAdminDecimalFieldWidget,
        help_text=_("Tax included, in the invoice's currency."),
    )
    reason = forms.CharField(
        max_length=300, widget=UnfoldAdminTextInputWidget, help_text=_("Printed on the credit note.")
    )
    refund = forms.BooleanField(
        required=False,
        initial=True,
        widget=UnfoldBooleanWidget,
        help_text=_(
            "Refund what the customer has paid beyond the new balance to their card payments; "
            "unticked, it stays as a credit to settle by hand."
        ),
    )


class VoidForm(forms.Form):
    reason = forms.CharField(max_length=300, required=False, widget=UnfoldAdminTextInputWidget)


@admin.register(Invoice)
class InvoiceAdmin(AuditedModelAdmin):
    list_display = ["__str__", "organization", "period_start", "status", "total", "balance", "due_date"]
    list_filter = ["status", OverdueFilter, "currency", "issuer"]
    list_select_related = ["organization"]
    search_fields = ["number", "organization__slug", "organization__name"]
    date_hierarchy = "period_start"
    inlines = [InvoiceLineInline]
    actions = ["finalize", "void", "resend"]
    actions_detail = ["finalize_detail", "void_detail", "credit_note_detail", "resend_detail"]

    @admin.display(description=_("Balance due"))
    def balance(self, obj: Invoice) -> str:
        return money(obj.balance_due, obj.currency)

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
        return obj is not None and obj.is_draft and super().has_delete_permission(request, obj)

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        super().save_formset(request, form, formset, change)
        if form.instance.is_draft:
            services.invoice_totals_refresh(invoice=form.instance)

    # --- Permissions of the actions (custom permissions on Invoice, granted to the finance role) ---

    def has_finalize_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.has_perm(FINALIZE))

    def has_void_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.has_perm(VOID))

    def has_credit_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.has_perm(CREDIT))

    def has_resend_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.has_perm(RESEND))

    # --- The actions themselves ----------------------------------------------------------------

    def _each(self, request: HttpRequest, invoices: Any, fn: Callable[[Invoice], Any], done: str) -> None:
        for invoice in invoices:
            try:
                fn(invoice)
            except (services.InvoiceError, InvoiceRenderError) as exc:
                self.message_user(request, f"{invoice}: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"{invoice}: {done}.", messages.SUCCESS)

    def _finalize(self, request: HttpRequest, invoices: Any) -> None:
        require_permission(request, FINALIZE)
        self._each(
            request,
            invoices,
            lambda i: services.invoice_finalize(invoice_id=i.pk, actor=admin_user(request)),
            "finalized",
        )

    def _void(self, request: HttpRequest, invoices: Any, reason: str = "") -> None:
        require_permission(request, VOID)
        self._each(
            request,
            invoices,
            lambda i: services.invoice_void(invoice_id=i.pk, actor=admin_user(request), reason=reason),
            "voided",
        )

    def _resend_one(self, request: HttpRequest, invoice: Invoice) -> None:
        from billing.invoicing.delivery import invoice_email_send

        before = invoice.emailed_at
        if not invoice_email_send(invoice_id=invoice.pk, resend=True):
            raise services.InvoiceError("not sent: the organization has no billing email, owner or billing admin")
        invoice.refresh_from_db(fields=["emailed_at"])
        admin_audit(
            request,
            action="invoice.resend",
            obj=invoice,
            before={"emailed_at": before},
            after={"emailed_at": invoice.emailed_at},
        )

    def _resend(self, request: HttpRequest, invoices: Any) -> None:
        require_permission(request, RESEND)
        self._each(request, invoices, lambda i: self._resend_one(request, i), "email sent")

    @admin.action(description=_("Finalize selected drafts"), permissions=["finalize"])
    def finalize(self, request: HttpRequest, queryset: QuerySet[Invoice]) -> None:
        self._finalize(request, queryset)

    @admin.action(description=_("Void selected invoices"), permissions=["void"])
    def void(self, request: HttpRequest, queryset: QuerySet[Invoice]) -> None:
        self._void(request, queryset)

    @admin.action(description=_("Resend the invoice email"), permissions=["resend"])
    def resend(self, request: HttpRequest, queryset: QuerySet[Invoice]) -> None:
        self._resend(request, queryset)

    def _invoice(self, request: HttpRequest, object_id: str) -> Invoice:
        invoice = self.get_object(request, object_id)
        if invoice is None:
            raise Http404("No such invoice.")
        return invoice

    @action(description=_("Finalize"), url_path="finalize", permissions=["finalize"])
    def finalize_detail(self, request: HttpRequest, object_id: str) -> HttpResponse:
        invoice = self._invoice(request, object_id)
        if request.method == "POST":
            self._finalize(request, [invoice])
            return change_page(invoice)
        return action_page(
            request,
            self,
            invoice,
            title=str(_("Finalize")),
            description=str(
                _("Assigns the next number, freezes the invoice, renders its PDF and emails it to the customer.")
            ),
        )

    @action(description=_("Void"), url_path="void", permissions=["void"])
    def void_detail(self, request: HttpRequest, object_id: str) -> HttpResponse:
        invoice = self._invoice(request, object_id)
        form = VoidForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            self._void(request, [invoice], reason=form.cleaned_data["reason"])
            return change_page(invoice)
        return action_page(
            request,
            self,
            invoice,
            title=str(_("Void")),
            description=str(_("An unpaid invoice is voided and keeps its number; paid ones need a credit note.")),
            form=form,
        )

    @action(description=_("Issue a credit note"), url_path="credit-note", permissions=["credit"])
    def credit_note_detail(self, request: HttpRequest, object_id: str) -> HttpResponse:
        invoice = self._invoice(request, object_id)
        form = CreditNoteForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            require_permission(request, CREDIT)
            refund = form.cleaned_data["refund"]
            try:
                if refund and not request.user.has_perm(REFUND):
                    raise services.InvoiceError("Refunding needs the permission to refund payments: untick Refund.")
                note = services.credit_note_issue(
                    invoice_id=invoice.pk,
                    amount=form.cleaned_data["amount"],
                    reason=form.cleaned_data["reason"],
                    actor=admin_user(request),
                    refund=refund,
                )
            except services.InvoiceError as exc:
                form.add_error(None, str(exc))
            else:
                self.message_user(request, f"Credit note {note.number} issued.", messages.SUCCESS)
                return change_page(invoice)
        return action_page(
            request,
            self,
            invoice,
            title=str(_("Issue a credit note")),
            description=str(_("Credits part or all of the invoice in the credit note number series.")),
            form=form,
        )

    @action(description=_("Resend email"), url_path="resend", permissions=["resend"])
    def resend_detail(self, request: HttpRequest, object_id: str) -> HttpResponse:
        invoice = self._invoice(request, object_id)
        if request.method == "POST":
            self._resend(request, [invoice])
            return change_page(invoice)
        return action_page(
            request,
            self,
            invoice,
            title=str(_("Resend email")),
            description=str(_("Emails the invoice PDF to the organization's billing contacts again.")),
        )


@admin.register(CreditNote)
class CreditNoteAdmin(ReadOnlyModelAdmin):
    """Issued from an invoice's page (Issue a credit note): numbered, never edited."""

    list_display = ["number", "invoice", "organization", "amount", "tax_amount", "reason", "issue_date"]
    list_select_related = ["invoice", "organization"]
    search_fields = ["number", "invoice__number", "organization__slug"]


@admin.register(NumberSeries)
class NumberSeriesAdmin(AuditedModelAdmin):
    list_display = ["issuer", "kind", "year", "pattern", "last_value"]
    list_filter = ["kind", "issuer"]
    readonly_fields = ["last_value"]

"""Invoices, their lines, credit notes and number series.

A draft may be edited by the operator; finalization assigns the number from a locked counter and
freezes the document: afterwards only its payment state, its PDF and its email receipt change.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar

from django.db import models
from django.utils.translation import gettext_lazy as _

from aggregator.money import AmountField, CurrencyField
from aggregator.tenancy.scoping import TenantModel


class InvoiceImmutable(Exception):
    """A change to a finalized invoice, its lines or a credit note."""


class NumberSeries(models.Model):
    """A gapless sequence of document numbers of one issuer, e.g. ``INV-{YYYY}-{seq:06}``."""

    class Kind(models.TextChoices):
        INVOICE = "invoice", _("Invoice")
        CREDIT_NOTE = "credit_note", _("Credit note")

    issuer = models.ForeignKey("tenancy.Issuer", on_delete=models.PROTECT, related_name="number_series")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    pattern = models.CharField(max_length=60, help_text="Placeholders: {YYYY}, {MM}, {seq:06} (zero-padded).")
    # The counter restarts every year when the pattern contains {YYYY}.
    year = models.PositiveSmallIntegerField(default=0)
    last_value = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name_plural = "number series"
        constraints = [
            models.UniqueConstraint(fields=["issuer", "kind", "year"], name="one_series_per_issuer_kind_year")
        ]

    def __str__(self) -> str:
        return f"{self.issuer} {self.kind} {self.pattern} ({self.year or 'all years'}: {self.last_value})"


class Invoice(TenantModel):
    class Status(models.TextChoices):
        DRAFT = "draft", _("Draft")
        OPEN = "open", _("Open")
        PARTIALLY_PAID = "partially_paid", _("Partially paid")
        PAID = "paid", _("Paid")
        VOID = "void", _("Void")
        UNCOLLECTIBLE = "uncollectible", _("Uncollectible")

    class Grouping(models.TextChoices):
        VENDOR = "vendor", _("By vendor")
        VENDOR_MODEL = "vendor_model", _("By vendor and model")
        VENDOR_PROJECT = "vendor_project", _("By vendor and project")

    issuer = models.ForeignKey("tenancy.Issuer", on_delete=models.PROTECT, related_name="invoices")
    number = models.CharField(max_length=60, null=True, blank=True)  # noqa: DJ001  (drafts: NULL, never unique-clashing)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT)
    period_start = models.DateField()
    period_end = models.DateField(help_text="Last day of the service period (inclusive).")
    currency = CurrencyField()
    locale = models.CharField(max_length=5, default="en")
    billing_mode = models.CharField(max_length=20)
    grouping = models.CharField(max_length=20, choices=Grouping.choices, default=Grouping.VENDOR_MODEL)
    issue_date = models.DateField(null=True, blank=True)
    due_date = models.DateField(null=True, blank=True)
    review_until = models.DateTimeField(null=True, blank=True)
    subtotal = AmountField(default=0)
    tax_total = AmountField(default=0)
    total = AmountField(default=0)
    wallet_credit_applied = AmountField(default=0)
    payments_applied = AmountField(default=0, help_text="Top-ups paid during the period, shown as payments.")
    amount_due = AmountField(default=0)
    amount_paid = AmountField(default=0)
    amount_credited = AmountField(default=0, help_text="Credit notes issued against the invoice, tax included.")
    amount_refunded = AmountField(
        default=0, help_text="Given back of the payments received: refunds and what lost disputes took back."
    )
    tax_breakdown = models.JSONField(default=list, blank=True)  # [{"rate", "base", "tax", "tax_jpy"?}]
    tax_note = models.CharField(max_length=300, blank=True)
    customer = models.JSONField(default=dict, blank=True)  # snapshot at finalization
    issuer_snapshot = models.JSONField(default=dict, blank=True)
    pdf = models.FileField(upload_to="invoices/%Y/%m/", blank=True)
    pdf_sha256 = models.CharField(max_length=64, blank=True)
    finalized_at = models.DateTimeField(null=True, blank=True)
    emailed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    # Fields that may still change once an invoice is finalized.
    MUTABLE_AFTER_FINALIZATION: ClassVar[frozenset[str]] = frozenset(
        {"status", "amount_paid", "amount_credited", "amount_refunded", "pdf", "pdf_sha256", "emailed_at"}
    )

    class Meta:
        ordering = ["-period_start", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "period_start", "period_end"], name="one_invoice_per_period"
            )
        ]
        # Operator console actions, granted to staff roles (aggregator.tenancy.staff).
        permissions = [
            ("finalize_invoice", "Can finalize invoices"),
            ("void_invoice", "Can void invoices"),
            ("issue_credit_note", "Can issue credit notes"),
            ("resend_invoice", "Can resend invoice emails"),
        ]

    def __str__(self) -> str:
        return self.number or f"Draft {self.pk} ({self.period_start:%Y-%m})"

    @property
    def is_draft(self) -> bool:
        return self.status == self.Status.DRAFT

    @property
    def balance_due(self) -> Decimal:
        """What the customer still owes: the amount due less credit notes and net payments
        (negative when overpaid, e.g. after a credit note on a paid invoice, until refunded)."""
        return self.amount_due - self.amount_credited - (self.amount_paid - self.amount_refunded)

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None and not self._state.adding:
            stored = Invoice.objects.filter(pk=self.pk).values("status", "number").first()
            if stored and stored["status"] != self.Status.DRAFT:
                changed = set(kwargs.get("update_fields") or []) or self._changed_fields()
                forbidden = changed - self.MUTABLE_AFTER_FINALIZATION
                if forbidden:
                    raise InvoiceImmutable(
                        f"Invoice {stored['number']} is finalized; {', '.join(sorted(forbidden))} cannot change. "
                        "Issue a credit note instead."
                    )
        super().save(*args, **kwargs)

    def _changed_fields(self) -> set[str]:
        stored = Invoice.objects.get(pk=self.pk)
        return {f.attname for f in self._meta.concrete_fields if getattr(stored, f.attname) != getattr(self, f.attname)}

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        if self.status != self.Status.DRAFT:
            raise InvoiceImmutable("A finalized invoice is never deleted: void it, and it keeps its number.")
        return super().delete(*args, **kwargs)


class InvoiceLine(models.Model):
    class Kind(models.TextChoices):
        USAGE = "usage", _("Usage")
        FEE = "fee", _("Service fee")
        ADJUSTMENT = "adjustment", _("Adjustment")

    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.USAGE)
    vendor = models.CharField(max_length=40, blank=True)
    vendor_label = models.CharField(max_length=120, blank=True)
    description = models.CharField(max_length=300)
    quantity = AmountField(null=True, blank=True)
    unit = models.CharField(max_length=60, blank=True)
    original_amount = AmountField(null=True, blank=True)
    original_currency = models.CharField(max_length=3, blank=True)
    rate = models.DecimalField(max_digits=30, decimal_places=20, null=True, blank=True)
    amount = AmountField(help_text="In the invoice currency, rounded to its minor unit.")
    tax_rate = models.DecimalField(max_digits=6, decimal_places=3, default=0)
    position = models.PositiveIntegerField(default=0)

    tenant_path: ClassVar[str] = "invoice__organization"

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return f"{self.description}: {self.amount}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not Invoice.objects.filter(pk=self.invoice_id, status=Invoice.Status.DRAFT).exists():
            raise InvoiceImmutable("Lines of a finalized invoice cannot change: issue a credit note.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        if not Invoice.objects.filter(pk=self.invoice_id, status=Invoice.Status.DRAFT).exists():
            raise InvoiceImmutable("Lines of a finalized invoice cannot be deleted: issue a credit note.")
        return super().delete(*args, **kwargs)


class CreditNote(TenantModel):
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="credit_notes")
    number = models.CharField(max_length=60)
    amount = AmountField(help_text="Total credited, tax included, in the invoice currency.")
    tax_amount = AmountField(default=0)
    reason = models.CharField(max_length=300)
    issue_date = models.DateField()
    refund_amount = AmountField(default=0, help_text="Of the credit, what is paid back to the customer.")
    amount_refunded = AmountField(default=0, help_text="Of the refund amount, what the gateways refunded so far.")
    pdf = models.FileField(upload_to="credit-notes/%Y/%m/", blank=True)
    pdf_sha256 = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["invoice", "number"], name="unique_credit_note_number")]

    def __str__(self) -> str:
        return f"{self.number} ({self.amount} {self.invoice.currency})"

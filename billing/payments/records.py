"""Card payments and the gateway events that report them.

A ``Payment`` is one collection attempt at a gateway: one Stripe PaymentIntent for an invoice
(``invoice:<id>:attempt:<n>``) or for an automatic top-up (``topup:<id>:attempt:<n>``). Its row,
with the idempotency key, exists before the gateway is called, so a request or task that runs
twice, or two workers racing, find it and reuse the PaymentIntent instead of making a second one.

A ``WebhookEvent`` is a verified gateway event, stored once by its id before it is processed.
"""

from __future__ import annotations

from typing import ClassVar

from django.db import models
from django.utils.translation import gettext_lazy as _

from aggregator.money import AmountField, CurrencyField
from aggregator.tenancy.scoping import TenantModel


class Payment(TenantModel):
    class Status(models.TextChoices):
        REQUIRES_PAYMENT = "requires_payment", _("Waiting for payment")
        PROCESSING = "processing", _("Processing")
        SUCCEEDED = "succeeded", _("Succeeded")
        FAILED = "failed", _("Failed")
        REFUNDED = "refunded", _("Refunded")
        DISPUTED = "disputed", _("Disputed")

    # How far a payment got. Events may arrive in any order: one never moves a payment back
    # (a late "payment_failed" after "succeeded" changes nothing).
    RANK: ClassVar[dict[str, int]] = {
        Status.REQUIRES_PAYMENT: 0,
        Status.FAILED: 1,
        Status.PROCESSING: 2,
        Status.SUCCEEDED: 3,
        Status.REFUNDED: 4,
        Status.DISPUTED: 5,
    }

    invoice = models.ForeignKey(
        "billing.Invoice", null=True, blank=True, on_delete=models.PROTECT, related_name="payments"
    )
    top_up = models.ForeignKey(
        "billing.TopUp", null=True, blank=True, on_delete=models.PROTECT, related_name="payments"
    )
    attempt = models.PositiveSmallIntegerField(default=1, help_text="Attempt number within the invoice or top-up.")
    gateway = models.CharField(max_length=40, help_text="Slug of the gateway (stripe).")
    gateway_reference = models.CharField(
        max_length=255, blank=True, db_index=True, help_text="The gateway's payment, e.g. the PaymentIntent pi_…."
    )
    charge_reference = models.CharField(max_length=255, blank=True, help_text="The charge that moved money, ch_….")
    idempotency_key = models.CharField(max_length=100, unique=True)
    amount = AmountField(help_text="Asked for; once succeeded, what the gateway received.")
    currency = CurrencyField()
    amount_refunded = AmountField(default=0)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.REQUIRES_PAYMENT)
    failure_code = models.CharField(max_length=60, blank=True, help_text="Decline code, e.g. insufficient_funds.")
    failure_message = models.TextField(blank=True, help_text="Customer-facing explanation of the failure.")
    payment_method_type = models.CharField(max_length=30, blank=True, help_text="card, sepa_debit, …")
    wallet = models.CharField(max_length=30, blank=True, help_text="google_pay, apple_pay, … (empty: no wallet).")
    card_fingerprint = models.CharField(
        max_length=64, blank=True, help_text="The gateway's fingerprint of the card charged (not card data)."
    )
    dispute_reason = models.CharField(max_length=60, blank=True)
    dispute_status = models.CharField(
        max_length=30, blank=True, help_text="The gateway's status of the dispute: needs_response, won, lost, …"
    )
    amount_charged_back = AmountField(
        default=0, help_text="Taken back by the customer's bank when a dispute was lost (owed again, like a refund)."
    )
    succeeded_at = models.DateTimeField(
        null=True, blank=True, help_text="When the success was applied to the invoice or top-up (once)."
    )
    refunded_at = models.DateTimeField(null=True, blank=True)
    disputed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # Declared for type checkers (Django adds them with the foreign keys).
    invoice_id: int | None
    top_up_id: int | None

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(invoice__isnull=False, top_up__isnull=True)
                    | models.Q(invoice__isnull=True, top_up__isnull=False)
                ),
                name="payment_for_invoice_or_top_up",
            ),
            models.UniqueConstraint(
                fields=["gateway", "gateway_reference"],
                condition=~models.Q(gateway_reference=""),
                name="unique_payment_gateway_reference",
            ),
            models.CheckConstraint(condition=models.Q(amount__gt=0), name="payment_amount_positive"),
        ]
        permissions = [("refund_payment", "Can refund payments")]

    def __str__(self) -> str:
        return f"{self.idempotency_key}: {self.amount} {self.currency} ({self.status})"

    def advance(self, status: str) -> bool:
        """Move to ``status`` unless the payment already got further; whether it moved."""
        if self.RANK[self.Status(status)] <= self.RANK[self.Status(self.status)]:
            return False
        self.status = status
        return True


class WebhookEvent(models.Model):
    """A verified gateway event, stored once per (gateway, event id) and processed by a task."""

    class Status(models.TextChoices):
        RECEIVED = "received", _("Received")
        PROCESSED = "processed", _("Processed")
        IGNORED = "ignored", _("Ignored (nothing to do)")
        FAILED = "failed", _("Failed (retried)")

    gateway = models.CharField(max_length=40)
    event_id = models.CharField(max_length=255)
    type = models.CharField(max_length=100)
    payload = models.JSONField()
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.RECEIVED)
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True, help_text="Why processing failed, or what an operator should know.")

    objects: ClassVar[models.Manager[WebhookEvent]] = models.Manager()

    class Meta:
        ordering = ["-received_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["gateway", "event_id"], name="unique_webhook_event")]
        indexes = [models.Index(fields=["status", "received_at"])]

    def __str__(self) -> str:
        return f"{self.gateway} {self.event_id} {self.type} ({self.status})"

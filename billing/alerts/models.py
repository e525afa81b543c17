"""Alerts about balances, spend and syncs. One open alert per ongoing condition: it is never
repeated while the condition lasts, and resolves itself when the condition clears."""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar

from django.db import models
from django.utils.translation import gettext_lazy as _

from aggregator.money import AmountField
from aggregator.tenancy.scoping import TenantModel


class Alert(TenantModel):
    class Kind(models.TextChoices):
        LOW_BALANCE = "low_balance", _("Low balance")
        DEPLETION_SOON = "depletion_soon", _("Credits run out soon")
        SPEND_ANOMALY = "spend_anomaly", _("Unusual spend")
        CREDITS_EXHAUSTED = "credits_exhausted", _("Credits exhausted")
        SYNC_FAILING = "sync_failing", _("Sync failing")
        CREDIT_LIMIT_EXCEEDED = "credit_limit_exceeded", _("Credit limit exceeded")

    class Status(models.TextChoices):
        OPEN = "open", _("Open")
        RESOLVED = "resolved", _("Resolved")

    vendor_account = models.ForeignKey(
        "providers.VendorAccount", null=True, blank=True, on_delete=models.CASCADE, related_name="alerts"
    )
    kind = models.CharField(max_length=40, choices=Kind.choices)
    # What the condition is about: "va:<id>" or "wallet". One open alert per (organization, kind, subject).
    subject = models.CharField(max_length=60)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.OPEN)
    message = models.TextField()
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    notified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "kind", "subject"],
                condition=models.Q(status="open"),
                name="one_open_alert_per_condition",
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.subject} ({self.status})"


class AlertPolicy(TenantModel):
    """An organization's alert thresholds; organizations without one use the defaults."""

    low_balance_amount = AmountField(null=True, blank=True, help_text="Alert when a balance falls below this amount.")
    low_balance_days = models.PositiveSmallIntegerField(default=7, help_text="Alert when runway is below this.")
    depletion_within_days = models.PositiveSmallIntegerField(default=14)
    anomaly_factor = models.DecimalField(max_digits=6, decimal_places=2, default=Decimal("3.00"))
    sync_failing_hours = models.PositiveSmallIntegerField(default=6)

    tenant_path: ClassVar[str] = "organization"

    class Meta:
        verbose_name_plural = "alert policies"
        constraints = [models.UniqueConstraint(fields=["organization"], name="one_alert_policy_per_org")]

    def __str__(self) -> str:
        return f"alert policy of {self.organization_id}"

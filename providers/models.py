"""Linked vendor accounts, the cost and usage rows pulled from them, and sync runs."""

from __future__ import annotations

from typing import ClassVar

from django.db import models
from django.utils.translation import gettext_lazy as _

from aggregator.money import AmountField, CurrencyField
from aggregator.tenancy.scoping import TenantModel


class VendorAccount(TenantModel):
    """One account of a customer at one AI vendor. Credentials are stored encrypted only."""

    class Status(models.TextChoices):
        ACTIVE = "active", _("Active")
        CREDENTIALS_REJECTED = "credentials_rejected", _("Credentials rejected")
        CREDITS_EXHAUSTED = "credits_exhausted", _("Credits exhausted")
        DISABLED = "disabled", _("Disabled")

    vendor = models.CharField(max_length=40, db_index=True)
    label = models.CharField(max_length=120)
    credentials_encrypted = models.TextField(editable=False)
    # Masked credential values for display, e.g. {"admin_key": "sk-admin-…def"}.
    credentials_masked = models.JSONField(default=dict, editable=False)
    api_base = models.URLField(blank=True, help_text="Overrides the vendor's address (proxy, gateway, sandbox).")
    external_id = models.CharField(max_length=120, blank=True)
    status = models.CharField(max_length=30, choices=Status.choices, default=Status.ACTIVE)
    status_message = models.TextField(blank=True)
    sync_interval_minutes = models.PositiveIntegerField(default=60)
    trailing_days = models.PositiveSmallIntegerField(
        default=3, help_text="Days re-fetched on every sync, because vendors restate recent data."
    )
    sync_cursor = models.DateTimeField(null=True, blank=True, help_text="End of the last successfully synced window.")
    last_sync_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    failure_streak = models.PositiveIntegerField(default=0)
    settled_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Start of the last complete settlement: cost rows changed since are settled next.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["vendor", "label"]
        constraints = [models.UniqueConstraint(fields=["organization", "label"], name="unique_account_label_per_org")]
        # Operator console actions, granted to staff roles (aggregator.tenancy.staff).
        permissions = [
            ("sync_vendoraccount", "Can request a sync of vendor accounts"),
            ("disable_vendoraccount", "Can disable vendor accounts"),
        ]

    def __str__(self) -> str:
        return f"{self.label} ({self.vendor})"


class SyncRun(TenantModel):
    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        RUNNING = "running", _("Running")
        SUCCEEDED = "succeeded", _("Succeeded")
        FAILED = "failed", _("Failed")

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule", _("Schedule")
        API = "api", _("API")
        PORTAL = "portal", _("Portal")
        COMMAND = "command", _("Command line")
        IMPORT = "import", _("File import")

    vendor_account = models.ForeignKey(VendorAccount, on_delete=models.CASCADE, related_name="sync_runs")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    trigger = models.CharField(max_length=20, choices=Trigger.choices, default=Trigger.SCHEDULE)
    window_start = models.DateTimeField(null=True, blank=True)
    window_end = models.DateTimeField(null=True, blank=True)
    rows_read = models.PositiveIntegerField(default=0)
    rows_written = models.PositiveIntegerField(default=0)
    error_kind = models.CharField(max_length=40, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"sync {self.pk} of {self.vendor_account_id} ({self.status})"

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class CostRecord(TenantModel):
    """One normalized cost row, FOCUS-shaped. (vendor_account, source_key) is unique: re-syncing
    the same vendor bucket updates the row, never duplicates it."""

    vendor_account = models.ForeignKey(VendorAccount, on_delete=models.CASCADE, related_name="cost_records")
    vendor = models.CharField(max_length=40)
    source_key = models.CharField(max_length=255)
    charge_period_start = models.DateTimeField()
    charge_period_end = models.DateTimeField()
    service_name = models.CharField(max_length=200, blank=True)
    charge_description = models.CharField(max_length=300, blank=True)
    project = models.CharField(max_length=200, blank=True)
    consumed_quantity = AmountField(null=True, blank=True)
    consumed_unit = models.CharField(max_length=60, blank=True)
    billed_cost = AmountField()
    billing_currency = CurrencyField()
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["vendor_account", "source_key"], name="unique_cost_source_key"),
        ]
        indexes = [
            models.Index(fields=["organization", "charge_period_start"]),
            models.Index(fields=["vendor_account", "charge_period_start"]),
        ]
        ordering = ["charge_period_start", "id"]

    def __str__(self) -> str:
        return f"{self.vendor} {self.service_name} {self.billed_cost} {self.billing_currency}"


class UsageRecord(TenantModel):
    """A consumed quantity by model (tokens, requests, images…), keyed like CostRecord."""

    vendor_account = models.ForeignKey(VendorAccount, on_delete=models.CASCADE, related_name="usage_records")
    vendor = models.CharField(max_length=40)
    source_key = models.CharField(max_length=255)
    charge_period_start = models.DateTimeField()
    charge_period_end = models.DateTimeField()
    service_name = models.CharField(max_length=200, blank=True)
    project = models.CharField(max_length=200, blank=True)
    quantity = AmountField()
    unit = models.CharField(max_length=60)
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["vendor_account", "source_key"], name="unique_usage_source_key"),
        ]
        indexes = [models.Index(fields=["organization", "charge_period_start"])]
        ordering = ["charge_period_start", "id"]

    def __str__(self) -> str:
        return f"{self.vendor} {self.service_name} {self.quantity} {self.unit}"


class BalanceObservation(TenantModel):
    """A balance the vendor reported (OpenRouter, DeepSeek), kept for reconciliation."""

    vendor_account = models.ForeignKey(VendorAccount, on_delete=models.CASCADE, related_name="balance_observations")
    amount = AmountField()
    currency = CurrencyField()
    observed_at = models.DateTimeField()
    details = models.JSONField(default=dict, blank=True)
    sync_run = models.ForeignKey(SyncRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    tenant_path: ClassVar[str] = "organization"

    class Meta:
        ordering = ["-observed_at", "-id"]

    def __str__(self) -> str:
        return f"{self.vendor_account_id}: {self.amount} {self.currency} at {self.observed_at:%Y-%m-%d %H:%M}"

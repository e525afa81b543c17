"""Top-up rules, the top-ups they create, and each charge attempt of a top-up.

A rule watches one target (a vendor account's prepaid credits, or the organization's wallet).
When its trigger fires it creates a ``TopUp``; the database allows one open top-up per rule, so
concurrent evaluations cannot create two. Each charge of a top-up is a ``TopUpAttempt`` whose
idempotency key (``topup:<id>:attempt:<n>``) is stored before the gateway is called.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from aggregator.money import AmountField, CurrencyField
from aggregator.tenancy.scoping import TenantModel


class TargetKind(models.TextChoices):
    VENDOR_ACCOUNT = "vendor_account", _("Vendor account")
    WALLET = "wallet", _("Prepaid wallet")


class TopUpRule(TenantModel):
    class Trigger(models.TextChoices):
        BALANCE_BELOW = "balance_below", _("Balance below an amount")
        RUNWAY_BELOW = "runway_below", _("Runway below a number of days")

    class Method(models.TextChoices):
        FIXED = "fixed", _("Fixed amount")
        TARGET_BALANCE = "target_balance", _("Up to a target balance")

    target_kind = models.CharField(max_length=20, choices=TargetKind.choices)
    vendor_account = models.ForeignKey(
        "providers.VendorAccount", null=True, blank=True, on_delete=models.CASCADE, related_name="top_up_rules"
    )
    currency = CurrencyField(help_text="The target's currency; every amount of the rule is in it.")
    trigger = models.CharField(max_length=20, choices=Trigger.choices)
    threshold_amount = AmountField(null=True, blank=True, help_text="balance_below: top up when below this.")
    threshold_days = models.DecimalField(
        max_digits=6, decimal_places=1, null=True, blank=True, help_text="runway_below: top up when fewer days left."
    )
    method = models.CharField(max_length=20, choices=Method.choices)
    amount = AmountField(null=True, blank=True, help_text="fixed: the amount of each top-up.")
    target_balance = AmountField(null=True, blank=True, help_text="target_balance: top up to this balance.")
    minimum_amount = AmountField(default=0)
    maximum_amount = AmountField(null=True, blank=True, help_text="Empty: no maximum.")
    monthly_cap = AmountField(null=True, blank=True, help_text="Most charged per calendar month. Empty: no cap.")
    primary_method = models.ForeignKey(
        "billing.PaymentMethod", on_delete=models.PROTECT, related_name="top_up_rules_primary"
    )
    fallback_method = models.ForeignKey(
        "billing.PaymentMethod", null=True, blank=True, on_delete=models.SET_NULL, related_name="top_up_rules_fallback"
    )
    enabled = models.BooleanField(default=True)
    consecutive_failures = models.PositiveSmallIntegerField(default=0, editable=False)
    disabled_reason = models.TextField(blank=True, editable=False)
    status_message = models.TextField(blank=True, editable=False, help_text="Why the last evaluation did not top up.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(target_kind="vendor_account", vendor_account__isnull=False)
                    | models.Q(target_kind="wallet", vendor_account__isnull=True)
                ),
                name="top_up_rule_target_matches_kind",
            ),
            models.CheckConstraint(
                condition=models.Q(fallback_method__isnull=True)
                | ~models.Q(fallback_method=models.F("primary_method")),
                name="top_up_rule_fallback_differs",
            ),
        ]

    def __str__(self) -> str:
        return f"Top-up rule {self.pk} ({self.target_label})"

    @property
    def target_label(self) -> str:
        if self.target_kind == TargetKind.WALLET:
            return "prepaid wallet"
        return self.vendor_account.label if self.vendor_account else "vendor account"


class TopUp(TenantModel):
    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        PROCESSING = "processing", _("Processing")
        SUCCEEDED = "succeeded", _("Succeeded")
        FAILED = "failed", _("Failed")
        ACTION_REQUIRED = "action_required", _("Action required")
        CANCELED = "canceled", _("Canceled")

    OPEN_STATUSES = (Status.PENDING, Status.PROCESSING, Status.ACTION_REQUIRED)

    rule = models.ForeignKey(TopUpRule, null=True, blank=True, on_delete=models.SET_NULL, related_name="top_ups")
    target_kind = models.CharField(max_length=20, choices=TargetKind.choices)
    # An account with money history is never deleted (only disconnected), so its paid top-ups stay.
    vendor_account = models.ForeignKey(
        "providers.VendorAccount", null=True, blank=True, on_delete=models.CASCADE, related_name="top_ups"
    )
    amount = AmountField()
    currency = CurrencyField()
    month = models.DateField(help_text="First day of the calendar month whose cap the top-up counts toward.")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    attempt_count = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(
        null=True, blank=True, help_text="When the next attempt is due (while one is in flight: when to recover it)."
    )
    last_decline_code = models.CharField(max_length=60, blank=True)
    last_error = models.TextField(blank=True, help_text="Customer-facing explanation of the last failure.")
    action_url = models.URLField(max_length=500, blank=True)
    gateway = models.CharField(max_length=40, blank=True)
    gateway_reference = models.CharField(max_length=255, blank=True, db_index=True)
    ledger_transaction = models.ForeignKey(
        "billing.LedgerTransaction", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "next_attempt_at"])]
        constraints = [
            # One open top-up per rule: two evaluations racing for the same shortfall cannot both win.
            models.UniqueConstraint(
                fields=["rule"],
                condition=models.Q(status__in=["pending", "processing", "action_required"]),
                name="one_open_top_up_per_rule",
            ),
            models.CheckConstraint(condition=models.Q(amount__gt=0), name="top_up_amount_positive"),
        ]

    def __str__(self) -> str:
        return f"Top-up {self.pk}: {self.amount} {self.currency} ({self.status})"

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN_STATUSES


class TopUpAttempt(TenantModel):
    class Outcome(models.TextChoices):
        PENDING = "pending", _("In flight")
        SUCCEEDED = "succeeded", _("Succeeded")
        PROCESSING = "processing", _("Processing")
        DECLINED = "declined", _("Declined")
        ACTION_REQUIRED = "action_required", _("Action required")
        TEMPORARY_FAILURE = "temporary_failure", _("Temporary failure")
        ERROR = "error", _("Error on our side")

    top_up = models.ForeignKey(TopUp, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveSmallIntegerField()
    payment_method = models.ForeignKey(
        "billing.PaymentMethod", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    payment_method_label = models.CharField(max_length=100, blank=True)
    is_fallback = models.BooleanField(default=False, help_text="Charged the rule's fallback method.")
    # What was sent, so an interrupted attempt is repeated with exactly the same parameters.
    gateway = models.CharField(max_length=40)
    payment_method_reference = models.CharField(max_length=255)
    customer_reference = models.CharField(max_length=255, blank=True)
    idempotency_key = models.CharField(max_length=100, unique=True)
    outcome = models.CharField(max_length=20, choices=Outcome.choices, default=Outcome.PENDING)
    decline_code = models.CharField(max_length=60, blank=True)
    message = models.TextField(blank=True)
    gateway_reference = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["top_up", "number"]
        constraints = [models.UniqueConstraint(fields=["top_up", "number"], name="unique_top_up_attempt_number")]

    def __str__(self) -> str:
        return f"{self.idempotency_key} ({self.outcome})"

"""The dunning policy of an issuer, and one dunning case per unpaid invoice with its steps.

A case opens when a charge for the invoice fails (``payment_intent.payment_failed``) or when the
invoice passes its due date unpaid. Its steps fall on the policy's days after that moment: each
step charges the organization's saved default payment method off-session (an automatic retry) or,
when there is none to charge, emails a reminder. A hard decline stops automatic retries of that
payment method; reminders continue. When the last step and the grace period have passed with the
invoice still unpaid, the invoice becomes uncollectible and the operator is told.

One case per invoice (unique) and one step row per (case, number) (unique): a sweep that runs
twice, or two workers racing, find the row and neither charge nor email twice.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import ClassVar

from django.core.exceptions import ValidationError
from django.db import models
from django.utils.translation import gettext_lazy as _

from aggregator.tenancy.scoping import TenantModel

DEFAULT_RETRY_DAYS = (1, 3, 5, 7)
DEFAULT_GRACE_DAYS = 7
MAX_STEPS = 20


def parse_retry_days(value: str) -> list[int]:
    """``"1, 3, 5, 7"`` -> ``[1, 3, 5, 7]``; ``ValidationError`` saying what to fix otherwise."""
    parts = [part.strip() for part in str(value).split(",") if part.strip()]
    try:
        days = [int(part) for part in parts]
    except ValueError:
        raise ValidationError(
            _("Write the retry days as whole numbers separated by commas, e.g. 1, 3, 5, 7.")
        ) from None
    if not days:
        raise ValidationError(_("Give at least one retry day, e.g. 1, 3, 5, 7."))
    if len(days) > MAX_STEPS:
        raise ValidationError(_("Give at most %(max)d retry days.") % {"max": MAX_STEPS})
    if days[0] < 1 or any(later <= earlier for earlier, later in itertools.pairwise(days)):
        raise ValidationError(_("Retry days must be increasing and at least 1, e.g. 1, 3, 5, 7."))
    return days


def validate_retry_days(value: str) -> None:
    parse_retry_days(value)


class DunningPolicy(models.Model):
    """How one issuer collects unpaid invoices. An issuer without a policy row uses the defaults
    (``DunningPolicy.default()``): retries or reminders on days 1, 3, 5 and 7, written off on day 14."""

    issuer = models.OneToOneField("tenancy.Issuer", on_delete=models.CASCADE, related_name="dunning_policy")
    enabled = models.BooleanField(default=True, help_text="Off: failed and overdue invoices are left to the operator.")
    retry_days = models.CharField(
        max_length=100,
        default=", ".join(str(day) for day in DEFAULT_RETRY_DAYS),
        validators=[validate_retry_days],
        help_text="Days after the failed charge (or the due date) of each step, e.g. 1, 3, 5, 7.",
    )
    automatic_retries = models.BooleanField(
        default=True, help_text="Charge the saved default payment method on each step (otherwise only remind)."
    )
    send_reminders = models.BooleanField(
        default=True, help_text="Email the billing contacts on each step that does not charge, and after declines."
    )
    grace_days = models.PositiveSmallIntegerField(
        default=DEFAULT_GRACE_DAYS, help_text="Days after the last step before the invoice is written off."
    )
    mark_uncollectible = models.BooleanField(
        default=True, help_text="At the end, mark the invoice uncollectible (otherwise only tell the operator)."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "dunning policies"

    def __str__(self) -> str:
        return f"Dunning policy of {self.issuer}: days {self.retry_days}"

    @classmethod
    def default(cls) -> DunningPolicy:
        """The policy of issuers without one (not saved)."""
        return cls()

    @property
    def days(self) -> list[int]:
        return parse_retry_days(self.retry_days)

    def clean(self) -> None:
        parse_retry_days(self.retry_days)


class DunningCase(TenantModel):
    """The collection of one invoice: where it stands and when its next step is due."""

    class State(models.TextChoices):
        ACTIVE = "active", _("Active")
        RECOVERED = "recovered", _("Recovered (paid)")
        EXHAUSTED = "exhausted", _("Exhausted (written off)")
        CANCELED = "canceled", _("Canceled")

    class Trigger(models.TextChoices):
        PAYMENT_FAILED = "payment_failed", _("A payment failed")
        OVERDUE = "overdue", _("Past its due date")

    invoice = models.OneToOneField("billing.Invoice", on_delete=models.PROTECT, related_name="dunning_case")
    state = models.CharField(max_length=20, choices=State.choices, default=State.ACTIVE)
    opened_by = models.CharField(max_length=20, choices=Trigger.choices)
    anchor_at = models.DateTimeField(help_text="The failed charge or the end of the due date: steps count from it.")
    # The policy as it was when the case opened: a later change of the policy applies to new cases.
    retry_days = models.CharField(max_length=100)
    grace_days = models.PositiveSmallIntegerField()
    steps_done = models.PositiveSmallIntegerField(default=0)
    next_step_at = models.DateTimeField(
        null=True, blank=True, help_text="When the next step is due (while a charge is in flight: when to repeat it)."
    )
    automatic_retries = models.BooleanField(default=True, help_text="Off once the policy says only remind.")
    blocked_method = models.ForeignKey(
        "billing.PaymentMethod", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="A hard decline stopped automatic retries of this payment method (a new default resumes them).",
    )  # fmt: skip
    stop_reason = models.CharField(max_length=300, blank=True)
    last_failure_code = models.CharField(max_length=60, blank=True)
    last_failure_message = models.TextField(blank=True)
    opened_at = models.DateTimeField(auto_now_add=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    close_note = models.CharField(max_length=300, blank=True)
    operator_notified_at = models.DateTimeField(null=True, blank=True)

    invoice_id: int
    blocked_method_id: int | None

    class Meta:
        ordering = ["next_step_at", "id"]
        indexes = [models.Index(fields=["state", "next_step_at"])]

    def __str__(self) -> str:
        return f"Dunning of {self.invoice} ({self.state}, {self.steps_done} step(s) done)"

    @property
    def days(self) -> list[int]:
        return parse_retry_days(self.retry_days)

    @property
    def is_active(self) -> bool:
        return self.state == self.State.ACTIVE

    def step_due(self, number: int) -> datetime:
        """When step ``number`` (1-based) falls; the step after the last is the write-off."""
        days = self.days
        if number <= len(days):
            return self.anchor_at + timedelta(days=days[number - 1])
        return self.end_at

    @property
    def end_at(self) -> datetime:
        return self.anchor_at + timedelta(days=self.days[-1] + self.grace_days)


class DunningStep(TenantModel):
    """One step of a case: an automatic charge (with its ``Payment`` and key) or a reminder."""

    class Kind(models.TextChoices):
        CHARGE = "charge", _("Automatic charge")
        REMINDER = "reminder", _("Reminder")

    class Outcome(models.TextChoices):
        PENDING = "pending", _("In flight")
        SUCCEEDED = "succeeded", _("Paid")
        PROCESSING = "processing", _("Processing")
        DECLINED = "declined", _("Declined")
        ACTION_REQUIRED = "action_required", _("Customer must confirm")
        ERROR = "error", _("Error on our side")
        REMINDED = "reminded", _("Reminder sent")
        SKIPPED = "skipped", _("Nothing sent (no contact, or reminders off)")

    FINISHED: ClassVar[frozenset[str]] = frozenset(
        {Outcome.SUCCEEDED, Outcome.DECLINED, Outcome.ACTION_REQUIRED, Outcome.ERROR, Outcome.REMINDED, Outcome.SKIPPED}
    )

    case = models.ForeignKey(DunningCase, on_delete=models.CASCADE, related_name="steps")
    number = models.PositiveSmallIntegerField()
    kind = models.CharField(max_length=20, choices=Kind.choices)
    outcome = models.CharField(max_length=20, choices=Outcome.choices, default=Outcome.PENDING)
    payment = models.OneToOneField(
        "billing.Payment", null=True, blank=True, on_delete=models.PROTECT, related_name="dunning_step"
    )
    payment_method = models.ForeignKey(
        "billing.PaymentMethod", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    payment_method_label = models.CharField(max_length=100, blank=True)
    decline_code = models.CharField(max_length=60, blank=True)
    message = models.TextField(blank=True)
    emailed_to = models.JSONField(default=list, blank=True, help_text="Who was emailed about this step.")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    payment_id: int | None

    class Meta:
        ordering = ["case", "number"]
        constraints = [models.UniqueConstraint(fields=["case", "number"], name="unique_dunning_step_number")]

    def __str__(self) -> str:
        return f"Step {self.number} of {self.case_id}: {self.kind} ({self.outcome})"

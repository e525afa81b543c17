"""Saved payment methods. Card data never reaches us: only the gateway's reference and what a
customer needs to recognise the method (brand, last four digits, expiry, wallet)."""

from __future__ import annotations

from datetime import date

from django.db import models
from django.utils.translation import gettext_lazy as _

from aggregator.tenancy.scoping import TenantModel


class PaymentMethod(TenantModel):
    class Kind(models.TextChoices):
        CARD = "card", _("Card")
        PAYPAL = "paypal", _("PayPal")
        SEPA_DEBIT = "sepa_debit", _("SEPA Direct Debit")

    class Wallet(models.TextChoices):
        NONE = "", _("None")
        GOOGLE_PAY = "google_pay", _("Google Pay")
        APPLE_PAY = "apple_pay", _("Apple Pay")

    gateway = models.CharField(max_length=40, help_text="Slug of the gateway that holds it (stripe, paypal, fake).")
    gateway_reference = models.CharField(max_length=255, help_text="The gateway's id, e.g. pm_… (never card data).")
    customer_reference = models.CharField(
        max_length=255, blank=True, help_text="The gateway's customer the method is attached to, e.g. cus_…."
    )
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.CARD)
    brand = models.CharField(max_length=30, blank=True)
    last4 = models.CharField(max_length=4, blank=True)
    exp_month = models.PositiveSmallIntegerField(null=True, blank=True)
    exp_year = models.PositiveSmallIntegerField(null=True, blank=True)
    wallet = models.CharField(max_length=20, choices=Wallet.choices, blank=True, default=Wallet.NONE)
    fingerprint = models.CharField(
        max_length=64,
        blank=True,
        help_text="The gateway's fingerprint of the card (not card data): the same card saved twice, or paid "
        "with on the pay page, has the same one.",
    )
    is_default = models.BooleanField(default=False)
    is_fallback = models.BooleanField(
        default=False, help_text="Charged when the default is declined (automatic payments and dunning)."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-is_default", "-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["gateway", "gateway_reference"], name="unique_payment_method_reference"),
            models.UniqueConstraint(
                fields=["organization"], condition=models.Q(is_default=True), name="one_default_payment_method"
            ),
            models.UniqueConstraint(
                fields=["organization"], condition=models.Q(is_fallback=True), name="one_fallback_payment_method"
            ),
            models.CheckConstraint(
                condition=~models.Q(is_default=True, is_fallback=True), name="payment_method_default_or_fallback"
            ),
        ]

    def __str__(self) -> str:
        return self.label

    @property
    def label(self) -> str:
        """How the customer knows it, e.g. "Visa •••• 4242 (Google Pay)"."""
        if self.kind == self.Kind.CARD:
            text = f"{(self.brand or 'Card').title()} •••• {self.last4 or '????'}"
        else:
            text = str(self.Kind(self.kind).label)
        if self.wallet:
            text += f" ({self.Wallet(self.wallet).label})"
        return text

    def expired_on(self, day: date) -> bool:
        """A card is valid through the last day of its expiry month."""
        if self.exp_year is None or self.exp_month is None:
            return False
        return (day.year, day.month) > (self.exp_year, self.exp_month)

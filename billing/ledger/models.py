"""The double-entry ledger: accounts, transactions and their entries. Append-only.

Amounts are signed: a debit is positive, a credit negative; the entries of a transaction sum to
zero per currency. An account's ``balance`` is the running sum of its entries, updated in the
same database transaction as the posting, under a row lock, so reading it never scans history.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import models
from django.utils.translation import gettext_lazy as _

from aggregator.money import AmountField, CurrencyField


class LedgerAccount(models.Model):
    class Kind(models.TextChoices):
        ASSET = "asset", _("Asset")
        LIABILITY = "liability", _("Liability")
        INCOME = "income", _("Income")
        EXPENSE = "expense", _("Expense")
        EQUITY = "equity", _("Equity")

    # e.g. "vendor_prepaid:12:USD", "customer_wallet:3:EUR", "receivable:3:EUR", "cash:stripe:EUR", "revenue:fees:EUR"
    key = models.CharField(max_length=120, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    currency = CurrencyField()
    organization = models.ForeignKey(
        "tenancy.Organization", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    vendor_account = models.ForeignKey(
        "providers.VendorAccount", null=True, blank=True, on_delete=models.PROTECT, related_name="ledger_accounts"
    )
    balance = AmountField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    tenant_path: ClassVar[str] = "organization"

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return f"{self.key} ({self.balance} {self.currency})"


class LedgerTransaction(models.Model):
    class Kind(models.TextChoices):
        PURCHASE = "purchase", _("Credit purchase")
        GRANT = "grant", _("Credit grant")
        EXPIRY = "expiry", _("Credit expiry")
        CONSUMPTION = "consumption", _("Consumption")
        CUSTOMER_CHARGE = "customer_charge", _("Customer charge")
        WALLET_TOPUP = "wallet_topup", _("Wallet top-up")
        VENDOR_TOPUP = "vendor_topup", _("Vendor top-up")
        ADJUSTMENT = "adjustment", _("Adjustment")

    kind = models.CharField(max_length=30, choices=Kind.choices)
    # Derived from our own rows, so a retried or duplicated posting is refused by the database.
    idempotency_key = models.CharField(max_length=200, unique=True)
    organization = models.ForeignKey(
        "tenancy.Organization", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    vendor_account = models.ForeignKey(
        "providers.VendorAccount", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    effective_at = models.DateTimeField(db_index=True, help_text="When the money moved (balances at a date use it).")
    settlement_day = models.DateField(null=True, blank=True, help_text="The consumption day a settlement posts.")
    description = models.CharField(max_length=300, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    tenant_path: ClassVar[str] = "organization"

    class Meta:
        ordering = ["-effective_at", "-id"]
        indexes = [models.Index(fields=["vendor_account", "kind", "settlement_day"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.idempotency_key}"


class LedgerEntry(models.Model):
    transaction = models.ForeignKey(LedgerTransaction, on_delete=models.PROTECT, related_name="entries")
    account = models.ForeignKey(LedgerAccount, on_delete=models.PROTECT, related_name="entries")
    amount = AmountField()
    currency = CurrencyField()
    effective_at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "ledger entries"
        indexes = [models.Index(fields=["account", "effective_at"])]
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.account.key} {self.amount} {self.currency}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None and not self._state.adding:
            raise LedgerImmutable("Posted ledger entries are never changed: post a correcting transaction.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise LedgerImmutable("Posted ledger entries are never deleted: post a correcting transaction.")


class LedgerImmutable(Exception):
    """An attempt to change or delete a posted entry."""


class CreditPurchase(models.Model):
    """Credits bought (or granted) at a vendor, with their expiry: each is a lot that expires whole,
    less what was consumed from it (oldest-expiring lots are consumed first)."""

    class Kind(models.TextChoices):
        PURCHASE = "purchase", _("Purchase")
        GRANT = "grant", _("Grant")

    organization = models.ForeignKey("tenancy.Organization", on_delete=models.CASCADE, related_name="+")
    vendor_account = models.ForeignKey("providers.VendorAccount", on_delete=models.PROTECT, related_name="purchases")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    amount = AmountField()
    currency = CurrencyField()
    effective_at = models.DateTimeField()
    expires_at = models.DateTimeField(null=True, blank=True)
    note = models.CharField(max_length=200, blank=True)
    transaction = models.OneToOneField(LedgerTransaction, on_delete=models.PROTECT, related_name="+")
    expired_amount = AmountField(null=True, blank=True, editable=False)
    expiry_transaction = models.OneToOneField(
        LedgerTransaction, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_by = models.ForeignKey("tenancy.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    tenant_path: ClassVar[str] = "organization"

    class Meta:
        ordering = ["-effective_at", "-id"]
        constraints = [models.CheckConstraint(condition=models.Q(amount__gt=0), name="purchase_amount_positive")]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount} {self.currency} for {self.vendor_account_id}"


class VendorFee(models.Model):
    """The operator's fee for one vendor of one organization, overriding the organization's fee."""

    organization = models.ForeignKey("tenancy.Organization", on_delete=models.CASCADE, related_name="vendor_fees")
    vendor = models.CharField(max_length=40)
    percent = models.DecimalField(max_digits=6, decimal_places=3)

    tenant_path: ClassVar[str] = "organization"

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "vendor"], name="one_fee_per_vendor")]

    def __str__(self) -> str:
        return f"{self.vendor}: {self.percent}%"


class Reconciliation(models.Model):
    """A vendor-reported balance compared with the ledger at the same moment."""

    organization = models.ForeignKey("tenancy.Organization", on_delete=models.CASCADE, related_name="+")
    observation = models.OneToOneField(
        "providers.BalanceObservation", on_delete=models.CASCADE, related_name="reconciliation"
    )
    ledger_balance = AmountField()
    drift = AmountField(help_text="Vendor-reported balance minus the ledger's.")
    tolerance = AmountField()
    flagged = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    tenant_path: ClassVar[str] = "organization"

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"drift {self.drift} ({'flagged' if self.flagged else 'ok'})"

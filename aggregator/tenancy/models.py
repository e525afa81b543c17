"""Customers (organizations), their members and API keys, and the operator's issuing entity."""

from __future__ import annotations

from typing import Any, ClassVar

from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from aggregator.money import AmountField, CurrencyField
from aggregator.tenancy.scoping import TenantModel

country_validator = RegexValidator(r"^[A-Z]{2}$", "Use a two-letter ISO 3166 country code such as US, DE or JP.")


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def create_user(self, email: str, password: str | None = None, **extra: Any) -> User:
        if not email:
            raise ValueError("An email address is required.")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.update(is_staff=True, is_superuser=True)
        return self.create_user(email, password, **extra)


class User(AbstractBaseUser, PermissionsMixin):
    """A person who signs in with an email address: a customer's member or an operator's staff."""

    email = models.EmailField(_("email address"), unique=True)
    full_name = models.CharField(_("full name"), max_length=200, blank=True)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False, help_text="Can sign in to the operator console.")
    date_joined = models.DateTimeField(default=timezone.now)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    def __str__(self) -> str:
        return self.email

    def clean(self) -> None:
        super().clean()
        self.email = self.email.strip().lower()


class Issuer(models.Model):
    """The operator's legal entity that issues invoices."""

    name = models.CharField(max_length=200)
    legal_name = models.CharField(max_length=200, blank=True)
    address = models.TextField(blank=True, help_text="Postal address, one line per row.")
    country = models.CharField(max_length=2, validators=[country_validator])
    email = models.EmailField(blank=True)
    vat_id = models.CharField("EU VAT id", max_length=20, blank=True)
    jp_registration_number = models.CharField(
        "Japan qualified invoice registration number",
        max_length=14,
        blank=True,
        validators=[RegexValidator(r"^T\d{13}$", "Use T followed by 13 digits, e.g. T1234567890123.")],
    )
    is_default = models.BooleanField(default=False, help_text="Issues invoices of organizations with no issuer set.")

    class TaxRegime(models.TextChoices):
        NONE = "none", "No tax (e.g. US)"
        EU_VAT = "eu_vat", "EU VAT"
        JP_CONSUMPTION = "jp_consumption", "Japan consumption tax (qualified invoice)"

    tax_regime = models.CharField(max_length=20, choices=TaxRegime.choices, default=TaxRegime.NONE)
    jp_tax_rounding = models.CharField(
        max_length=20,
        default="ROUND_DOWN",
        help_text="Rounding of Japanese consumption tax, once per rate per invoice.",
    )
    invoice_pattern = models.CharField(max_length=60, default="INV-{YYYY}-{seq:06}")
    credit_note_pattern = models.CharField(max_length=60, default="CN-{YYYY}-{seq:06}")
    bank_details = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"], condition=models.Q(is_default=True), name="one_default_issuer"
            )
        ]

    def __str__(self) -> str:
        return self.name


class Organization(models.Model):
    """A customer tenant: everything it owns is scoped to it."""

    class BillingMode(models.TextChoices):
        CONSOLIDATED = "consolidated", _("Consolidated (invoiced monthly)")
        PREPAID_WALLET = "prepaid_wallet", _("Prepaid wallet")

    class Locale(models.TextChoices):
        EN = "en", _("English")
        JA = "ja", _("Japanese")

    slug = models.SlugField(max_length=60, unique=True)
    name = models.CharField(max_length=200)
    legal_name = models.CharField(max_length=200, blank=True)
    address = models.TextField(blank=True)
    country = models.CharField(max_length=2, blank=True, validators=[country_validator])
    tax_id = models.CharField(max_length=32, blank=True)
    currency = CurrencyField(help_text="Invoice currency (ISO 4217).")
    locale = models.CharField(max_length=5, choices=Locale.choices, default=Locale.EN)
    billing_mode = models.CharField(max_length=20, choices=BillingMode.choices, default=BillingMode.CONSOLIDATED)
    payment_terms_days = models.PositiveSmallIntegerField(default=14)
    billing_email = models.EmailField(blank=True)
    invoice_grouping = models.CharField(
        max_length=20,
        choices=[
            ("vendor", "By vendor"),
            ("vendor_model", "By vendor and model"),
            ("vendor_project", "By vendor and project"),
        ],
        default="vendor_model",
    )
    invoice_review_days = models.PositiveSmallIntegerField(
        default=0, help_text="Days drafts wait for operator review before finalizing (0: finalize at close)."
    )
    fee_percent = models.DecimalField(
        max_digits=6, decimal_places=3, default=0, help_text="Operator's fee on consumption, in percent."
    )
    credit_limit = AmountField(
        default=0, help_text="Prepaid wallet: how far below zero consumption may take the wallet (overage)."
    )
    issuer = models.ForeignKey(Issuer, null=True, blank=True, on_delete=models.PROTECT, related_name="organizations")
    created_at = models.DateTimeField(auto_now_add=True)

    # An organization is its own tenant.
    tenant_path: ClassVar[str] = "pk"

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Role(models.TextChoices):
    OWNER = "owner", _("Owner")
    BILLING_ADMIN = "billing_admin", _("Billing admin")
    VIEWER = "viewer", _("Viewer")


# Higher rank may do everything a lower rank may.
ROLE_RANK = {Role.VIEWER: 0, Role.BILLING_ADMIN: 1, Role.OWNER: 2}


class Membership(TenantModel):
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "user"], name="one_membership_per_user")]
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization} ({self.role})"


class ApiKey(TenantModel):
    """A per-organization API key. Only a SHA-256 of the key is stored; the key is shown once."""

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    hashed_key = models.CharField(max_length=64, editable=False)
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.BILLING_ADMIN)
    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} (agk_{self.prefix}_…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class AuditEvent(models.Model):
    """Who did what, when, to which object, with the values before and after."""

    organization = models.ForeignKey(Organization, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    actor = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    actor_api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    action = models.CharField(max_length=80)
    object_type = models.CharField(max_length=80, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    tenant_path: ClassVar[str] = "organization"

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.action} {self.object_type}:{self.object_id}"


class Invitation(TenantModel):
    """An invitation to join an organization, sent by email. Only a SHA-256 of the token in the
    link is stored; the link works once, until it expires or is revoked."""

    email = models.EmailField()
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.VIEWER)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    invited_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "email"],
                condition=models.Q(accepted_at__isnull=True, revoked_at__isnull=True),
                name="one_pending_invitation_per_email",
            )
        ]

    def __str__(self) -> str:
        return f"invitation of {self.email} to {self.organization_id} ({self.role})"

    def is_pending(self, now: Any = None) -> bool:
        now = now or timezone.now()
        return self.accepted_at is None and self.revoked_at is None and self.expires_at > now

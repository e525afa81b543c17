"""Operator console: staff users and roles, customer organizations with their accounts, balances
and invoices, issuers, API keys and the audit log."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import GroupAdmin as BaseGroupAdmin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.models import Group
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _
from unfold.forms import AdminPasswordChangeForm, UserChangeForm, UserCreationForm

from aggregator.tenancy.admin_base import (
    AuditedModelAdmin,
    ReadOnlyModelAdmin,
    ReadOnlyTabularInline,
    TabularInline,
    admin_user,
    link,
    rows_table,
)
from aggregator.tenancy.models import ApiKey, AuditEvent, Invitation, Issuer, Membership, Organization, User
from aggregator.tenancy.services import api_key_create, api_key_revoke
from billing.invoicing.delivery import money
from billing.invoicing.models import Invoice
from billing.ledger.models import LedgerAccount
from providers.models import VendorAccount

__all__ = ["admin_user"]  # imported from here by the other apps' admin modules

# How many of an organization's invoices its page lists (the rest: one click away).
RECENT_INVOICES = 12

admin.site.unregister(Group)


@admin.register(Group)
class GroupAdmin(BaseGroupAdmin, AuditedModelAdmin):
    """Staff roles. ``finance`` and ``support`` are rewritten on every migrate (aggregator.tenancy.staff)."""


@admin.register(User)
class UserAdmin(BaseUserAdmin, AuditedModelAdmin):
    form = UserChangeForm
    add_form = UserCreationForm
    change_password_form = AdminPasswordChangeForm
    ordering = ["email"]
    list_display = ["email", "full_name", "is_staff", "is_active", "date_joined"]
    list_filter = ["is_staff", "is_superuser", "is_active", "groups"]
    search_fields = ["email", "full_name"]
    fieldsets = (
        (None, {"fields": ("email", "password", "full_name")}),
        ("Access", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)


class MembershipInline(TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


class VendorAccountInline(ReadOnlyTabularInline):
    model = VendorAccount
    fields = ["label", "vendor", "status", "last_success_at", "failure_streak"]
    readonly_fields = fields
    verbose_name_plural = _("Vendor accounts")


@admin.register(Organization)
class OrganizationAdmin(AuditedModelAdmin):
    list_display = ["name", "slug", "currency", "billing_mode", "country", "created_at"]
    search_fields = ["name", "slug", "legal_name"]
    list_filter = ["billing_mode", "currency"]
    prepopulated_fields = {"slug": ("name",)}
    inlines = [MembershipInline, VendorAccountInline]
    readonly_fields = ["balances", "invoices"]

    def get_fieldsets(self, request: HttpRequest, obj: Organization | None = None) -> Any:
        fields = [f for f in self.get_fields(request, obj) if f not in ("balances", "invoices")]
        sets: list[tuple[Any, dict[str, Any]]] = [(None, {"fields": fields})]
        if obj is not None:
            sets.append((_("Money"), {"fields": ["balances", "invoices"]}))
        return sets

    @admin.display(description=_("Ledger balances"))
    def balances(self, obj: Organization) -> SafeString:
        accounts = LedgerAccount.objects.filter(organization=obj).order_by("key")[:50]
        if not accounts:
            return format_html("{}", _("No ledger accounts yet."))
        return rows_table(
            ((a.key, money(a.balance, a.currency)) for a in accounts),
            more_url=reverse("admin:billing_ledgeraccount_changelist") + f"?organization__id__exact={obj.pk}",
            more_label=_("All ledger accounts"),
        )

    @admin.display(description=_("Invoices"))
    def invoices(self, obj: Organization) -> SafeString:
        recent = Invoice.objects.filter(organization=obj).order_by("-period_start", "-id")[:RECENT_INVOICES]
        if not recent:
            return format_html("{}", _("No invoices yet."))
        return rows_table(
            (
                (
                    link(reverse("admin:billing_invoice_change", args=[i.pk]), i),
                    i.period_start.strftime("%Y-%m"),
                    money(i.balance_due, i.currency),
                    i.get_status_display(),
                )
                for i in recent
            ),
            more_url=reverse("admin:billing_invoice_changelist") + f"?organization__id__exact={obj.pk}",
            more_label=_("All invoices"),
        )


@admin.register(Issuer)
class IssuerAdmin(AuditedModelAdmin):
    list_display = ["name", "country", "vat_id", "jp_registration_number", "tax_regime", "is_default"]


class ApiKeyForm(forms.ModelForm[ApiKey]):
    class Meta:
        model = ApiKey
        fields = ["organization", "name", "role", "revoked_at"]


@admin.register(ApiKey)
class ApiKeyAdmin(AuditedModelAdmin):
    form = ApiKeyForm
    list_display = ["name", "organization", "masked", "role", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["role"]
    search_fields = ["name", "organization__slug", "prefix"]
    readonly_fields = ["masked", "created_by", "created_at", "last_used_at"]
    actions = ["revoke"]

    @admin.display(description="Key")
    def masked(self, obj: ApiKey) -> str:
        return f"agk_{obj.prefix}_…" if obj.prefix else "(shown once when saved)"

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        fields = list(super().get_readonly_fields(request, obj))
        return [*fields, "organization", "role"] if obj else fields

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        key, raw_key = api_key_create(
            organization=obj.organization, name=obj.name, role=obj.role, created_by=admin_user(request)
        )
        obj.pk = key.pk
        obj.prefix = key.prefix
        obj.hashed_key = key.hashed_key
        obj._state.adding = False
        messages.warning(request, f"Copy this API key now; it will not be shown again: {raw_key}")

    @admin.action(description="Revoke selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset:
            api_key_revoke(key=key, actor=admin_user(request))
        self.message_user(request, f"Revoked {queryset.count()} key(s).")


def _shown(value: Any) -> str:
    if value is None:
        return "—"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)


def audit_changes_table(before: dict[str, Any] | None, after: dict[str, Any] | None) -> SafeString:
    """The values before and after, one row per field, changed fields marked."""
    before, after = before or {}, after or {}
    if not before and not after:
        return format_html("{}", "—")
    keys = list(dict.fromkeys([*before, *after]))
    rows = format_html_join(
        "",
        "<tr{}><th class='pr-4 text-left'>{}</th><td class='pr-4'>{}</td><td>{}</td></tr>",
        (
            (
                format_html(" class='{}'", "font-semibold") if before.get(k) != after.get(k) else "",
                k,
                _shown(before.get(k)) if k in before else "",
                _shown(after.get(k)) if k in after else "",
            )
            for k in keys
        ),
    )
    return format_html(
        "<table><thead><tr><th></th><th class='pr-4 text-left'>{}</th><th class='text-left'>{}</th></tr></thead>"
        "<tbody>{}</tbody></table>",
        _("Before"),
        _("After"),
        rows,
    )


@admin.register(Invitation)
class InvitationAdmin(ReadOnlyModelAdmin):
    """Invitations customers' owners sent from the portal. The token is never stored (only its hash,
    not shown here); revoking is the owner's, in the portal."""

    list_display = ["email", "organization", "role", "invited_by", "created_at", "expires_at", "accepted_at",
                    "revoked_at"]  # fmt: skip
    list_filter = ["role", ("organization", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["email", "organization__slug"]
    list_select_related = ["organization", "invited_by"]
    fields = ["email", "organization", "role", "invited_by", "created_at", "expires_at", "accepted_at",
              "accepted_by", "revoked_at"]  # fmt: skip


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyModelAdmin):
    """The audit log: who did what, when, to which object, before and after. Nobody edits it."""

    list_display = ["created_at", "action", "organization", "actor", "actor_api_key", "object_type", "object_id"]
    list_filter = [
        "action",
        ("created_at", admin.DateFieldListFilter),
        ("actor", admin.RelatedOnlyFieldListFilter),
        ("organization", admin.RelatedOnlyFieldListFilter),
        "object_type",
    ]
    date_hierarchy = "created_at"
    search_fields = ["action", "object_id", "organization__slug", "actor__email"]
    list_select_related = ["organization", "actor", "actor_api_key"]
    fields = [
        "created_at",
        "action",
        "organization",
        "actor",
        "actor_api_key",
        "object_type",
        "object_id",
        "changes",
    ]
    readonly_fields = fields

    @admin.display(description=_("Changes"))
    def changes(self, obj: AuditEvent) -> SafeString:
        return audit_changes_table(obj.before, obj.after)

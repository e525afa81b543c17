from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest

from aggregator.tenancy.models import ApiKey, AuditEvent, Issuer, Membership, Organization, User
from aggregator.tenancy.services import api_key_create, api_key_revoke


def admin_user(request: HttpRequest) -> User:
    """The signed-in staff user of an admin request (the admin refuses anonymous requests)."""
    assert isinstance(request.user, User)
    return request.user


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    ordering = ["email"]
    list_display = ["email", "full_name", "is_staff", "is_active", "date_joined"]
    search_fields = ["email", "full_name"]
    fieldsets = (
        (None, {"fields": ("email", "password", "full_name")}),
        ("Access", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)


class MembershipInline(admin.TabularInline[Membership, Organization]):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin[Organization]):
    list_display = ["name", "slug", "currency", "billing_mode", "country", "created_at"]
    search_fields = ["name", "slug", "legal_name"]
    list_filter = ["billing_mode", "currency"]
    prepopulated_fields = {"slug": ("name",)}
    inlines = [MembershipInline]


@admin.register(Issuer)
class IssuerAdmin(admin.ModelAdmin[Issuer]):
    list_display = ["name", "country", "vat_id", "jp_registration_number", "is_default"]


class ApiKeyForm(forms.ModelForm[ApiKey]):
    class Meta:
        model = ApiKey
        fields = ["organization", "name", "role", "revoked_at"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin[ApiKey]):
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


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin[AuditEvent]):
    list_display = ["created_at", "action", "organization", "actor", "actor_api_key", "object_type", "object_id"]
    list_filter = ["action"]
    search_fields = ["action", "object_id", "organization__slug", "actor__email"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

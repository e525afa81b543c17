"""Operator console pages for vendor accounts, sync runs and cost rows. Credentials are never shown:
the admin sees only masks, and can replace credentials but not read them."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from aggregator.tenancy.admin import admin_user
from providers import services
from providers.models import CostRecord, SyncRun, VendorAccount


class VendorAccountForm(forms.ModelForm):
    new_credentials = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text='Write-only. A JSON object, e.g. {"admin_key": "sk-admin-…"}; leave empty to keep the current ones.',
    )

    class Meta:
        model = VendorAccount
        fields = ["organization", "vendor", "label", "api_base", "sync_interval_minutes", "trailing_days"]

    def clean_new_credentials(self) -> Any:
        raw = self.cleaned_data.get("new_credentials")
        if not raw:
            if self.instance.pk is None:
                raise forms.ValidationError("Credentials are required for a new account.")
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise forms.ValidationError('Write the credentials as a JSON object, e.g. {"admin_key": "…"}.') from None


@admin.register(VendorAccount)
class VendorAccountAdmin(admin.ModelAdmin):
    form = VendorAccountForm
    list_display = ["label", "vendor", "organization", "status", "last_success_at", "failure_streak"]
    list_filter = ["vendor", "status"]
    search_fields = ["label", "organization__slug"]
    readonly_fields = [
        "credentials_masked",
        "status",
        "status_message",
        "sync_cursor",
        "last_sync_at",
        "last_success_at",
        "failure_streak",
        "settled_at",
    ]
    actions = ["sync_now", "disable"]

    def save_model(self, request: HttpRequest, obj: VendorAccount, form: Any, change: bool) -> None:
        credentials = form.cleaned_data.get("new_credentials")
        try:
            if change:
                services.vendor_account_update(
                    account=obj,
                    label=obj.label,
                    api_base=obj.api_base,
                    credentials=credentials,
                    actor=admin_user(request),
                )
            else:
                created = services.vendor_account_create(
                    organization=obj.organization,
                    vendor=obj.vendor,
                    label=obj.label,
                    credentials=credentials,
                    api_base=obj.api_base,
                    actor=admin_user(request),
                )
                obj.pk, obj._state.adding = created.pk, False
        except services.VendorAccountError as exc:
            messages.error(request, str(exc))

    @admin.action(description="Sync now")
    def sync_now(self, request: HttpRequest, queryset: QuerySet[VendorAccount]) -> None:
        for account in queryset:
            try:
                services.sync_run_request(account=account, trigger=SyncRun.Trigger.PORTAL)
            except services.VendorAccountError as exc:
                self.message_user(request, f"{account}: {exc}", messages.ERROR)
        self.message_user(request, "Syncs queued.")

    @admin.action(description="Disable (stop syncing)")
    def disable(self, request: HttpRequest, queryset: QuerySet[VendorAccount]) -> None:
        queryset.update(status=VendorAccount.Status.DISABLED)


@admin.register(SyncRun)
class SyncRunAdmin(admin.ModelAdmin):
    list_display = ["created_at", "vendor_account", "status", "trigger", "rows_read", "rows_written", "error_kind"]
    list_filter = ["status", "error_kind", "trigger"]
    readonly_fields = [f.name for f in SyncRun._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(CostRecord)
class CostRecordAdmin(admin.ModelAdmin):
    list_display = [
        "charge_period_start",
        "vendor",
        "vendor_account",
        "service_name",
        "billed_cost",
        "billing_currency",
    ]
    list_filter = ["vendor", "billing_currency"]
    search_fields = ["service_name", "project", "source_key"]
    readonly_fields = [f.name for f in CostRecord._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

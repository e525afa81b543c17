"""Operator console pages for vendor accounts, sync runs and cost rows. Credentials are never shown:
the admin sees only masks, and can replace credentials but not read them."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _
from unfold.decorators import action
from unfold.widgets import UnfoldAdminPasswordWidget

from aggregator.tenancy.admin_base import (
    ModelAdmin,
    ReadOnlyModelAdmin,
    action_page,
    admin_audit,
    admin_user,
    change_page,
    link,
    require_permission,
    rows_table,
)
from providers import services
from providers.models import BalanceObservation, CostRecord, SyncRun, UsageRecord, VendorAccount

SYNC_PERMISSION = "providers.sync_vendoraccount"
DISABLE_PERMISSION = "providers.disable_vendoraccount"
# Sync runs listed on an account's page (the rest: one click away).
RECENT_RUNS = 10


class VendorAccountForm(forms.ModelForm):
    new_credentials = forms.CharField(
        required=False,
        widget=UnfoldAdminPasswordWidget(render_value=False),
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


class SyncHealthFilter(admin.SimpleListFilter):
    title = _("sync health")
    parameter_name = "health"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [("failing", _("Failing")), ("healthy", _("Healthy"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[VendorAccount]) -> QuerySet[VendorAccount]:
        if self.value() == "failing":
            return queryset.filter(failure_streak__gt=0).exclude(status=VendorAccount.Status.DISABLED)
        if self.value() == "healthy":
            return queryset.filter(failure_streak=0)
        return queryset


@admin.register(VendorAccount)
class VendorAccountAdmin(ModelAdmin):
    form = VendorAccountForm
    list_display = ["label", "vendor", "organization", "status", "sync_health", "last_success_at", "failure_streak"]
    list_filter = [SyncHealthFilter, "vendor", "status"]
    list_select_related = ["organization"]
    search_fields = ["label", "organization__slug", "organization__name"]
    readonly_fields = [
        "credentials",
        "status",
        "status_message",
        "sync_cursor",
        "last_sync_at",
        "last_success_at",
        "failure_streak",
        "settled_at",
        "recent_sync_runs",
    ]
    actions = ["sync_now", "disable", "enable"]
    actions_detail = ["sync_now_detail", "disable_detail"]

    def get_readonly_fields(self, request: HttpRequest, obj: VendorAccount | None = None) -> list[str]:
        fields = list(super().get_readonly_fields(request, obj))
        # An account stays with its organization and vendor; make a new account for another one.
        return [*fields, "organization", "vendor"] if obj is not None else fields

    def get_fields(self, request: HttpRequest, obj: VendorAccount | None = None) -> list[str]:
        fields = list(super().get_fields(request, obj))
        if obj is not None and not self.has_change_permission(request, obj):
            # Viewers see the masks only; the write-only field means nothing to them.
            fields = [f for f in fields if f != "new_credentials"]
        return fields

    @admin.display(description=_("Credentials (masked)"))
    def credentials(self, obj: VendorAccount) -> SafeString:
        masked = obj.credentials_masked or {}
        if not masked:
            return format_html("{}", _("None stored."))
        return format_html_join(format_html("<br>"), "{}: {}", sorted(masked.items()))

    @admin.display(description=_("Sync health"))
    def sync_health(self, obj: VendorAccount) -> str:
        if obj.status == VendorAccount.Status.DISABLED:
            return str(_("disabled"))
        if obj.failure_streak:
            return str(_("failing ({count} in a row)")).format(count=obj.failure_streak)
        return str(_("healthy")) if obj.last_success_at else str(_("never synced"))

    @admin.display(description=_("Recent sync runs"))
    def recent_sync_runs(self, obj: VendorAccount) -> SafeString:
        runs = SyncRun.objects.filter(vendor_account=obj).order_by("-created_at", "-id")[:RECENT_RUNS]
        if not runs:
            return format_html("{}", _("No sync runs yet."))
        return rows_table(
            (
                (
                    link(
                        reverse("admin:providers_syncrun_change", args=[run.pk]),
                        run.created_at.strftime("%Y-%m-%d %H:%M"),
                    ),
                    run.get_status_display(),
                    _("%(n)d rows written") % {"n": run.rows_written},
                    run.error_kind,
                )
                for run in runs
            ),
            more_url=reverse("admin:providers_syncrun_changelist") + f"?vendor_account__id__exact={obj.pk}",
            more_label=_("All sync runs"),
        )

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
                schedule = {"sync_interval_minutes", "trailing_days"} & set(form.changed_data)
                if schedule:
                    VendorAccount.objects.filter(pk=obj.pk).update(**{name: getattr(obj, name) for name in schedule})
                    admin_audit(
                        request,
                        action="vendor_account.schedule",
                        obj=obj,
                        before={name: form.initial.get(name) for name in schedule},
                        after={name: getattr(obj, name) for name in schedule},
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

    # --- Actions ----------------------------------------------------------------------------------

    def has_sync_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.has_perm(SYNC_PERMISSION))

    def has_disable_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.has_perm(DISABLE_PERMISSION))

    def _sync(self, request: HttpRequest, accounts: QuerySet[VendorAccount]) -> None:
        require_permission(request, SYNC_PERMISSION)
        queued = 0
        for account in accounts:
            try:
                run = services.sync_run_request(account=account, trigger=SyncRun.Trigger.PORTAL)
            except services.VendorAccountError as exc:
                self.message_user(request, f"{account}: {exc}", messages.ERROR)
                continue
            admin_audit(request, action="vendor_account.sync_request", obj=account, after={"sync_run": run.pk})
            queued += 1
        if queued:
            self.message_user(request, f"Queued {queued} sync(s).", messages.SUCCESS)

    def _set_status(self, request: HttpRequest, accounts: QuerySet[VendorAccount], status: str) -> int:
        require_permission(request, DISABLE_PERMISSION)
        changed = 0
        with transaction.atomic():
            for account in accounts.select_for_update().exclude(status=status):
                before = {"status": account.status}
                message = "Disabled by an operator." if status == VendorAccount.Status.DISABLED else ""
                VendorAccount.objects.filter(pk=account.pk).update(status=status, status_message=message)
                verb = "disable" if status == VendorAccount.Status.DISABLED else "enable"
                admin_audit(
                    request, action=f"vendor_account.{verb}", obj=account, before=before, after={"status": status}
                )
                changed += 1
        return changed

    @admin.action(description=_("Sync now"), permissions=["sync"])
    def sync_now(self, request: HttpRequest, queryset: QuerySet[VendorAccount]) -> None:
        self._sync(request, queryset)

    @admin.action(description=_("Disable (stop syncing)"), permissions=["disable"])
    def disable(self, request: HttpRequest, queryset: QuerySet[VendorAccount]) -> None:
        count = self._set_status(request, queryset, VendorAccount.Status.DISABLED)
        self.message_user(request, f"Disabled {count} account(s).", messages.SUCCESS)

    @admin.action(description=_("Enable (sync again)"), permissions=["disable"])
    def enable(self, request: HttpRequest, queryset: QuerySet[VendorAccount]) -> None:
        count = self._set_status(request, queryset, VendorAccount.Status.ACTIVE)
        self.message_user(request, f"Enabled {count} account(s).", messages.SUCCESS)

    def _account(self, request: HttpRequest, object_id: str) -> VendorAccount:
        account = self.get_object(request, object_id)
        if account is None:
            raise Http404("No such vendor account.")
        return account

    @action(description=_("Sync now"), url_path="sync-now", permissions=["sync"])
    def sync_now_detail(self, request: HttpRequest, object_id: str) -> HttpResponse:
        account = self._account(request, object_id)
        if request.method == "POST":
            self._sync(request, VendorAccount.objects.filter(pk=account.pk))
            return change_page(account)
        return action_page(
            request,
            self,
            account,
            title=str(_("Sync now")),
            description=str(_("Fetches the account's cost and usage for its trailing window in the background.")),
        )

    @action(description=_("Disable"), url_path="disable", permissions=["disable"])
    def disable_detail(self, request: HttpRequest, object_id: str) -> HttpResponse:
        account = self._account(request, object_id)
        if request.method == "POST":
            self._set_status(request, VendorAccount.objects.filter(pk=account.pk), VendorAccount.Status.DISABLED)
            self.message_user(request, "The account is disabled.", messages.SUCCESS)
            return change_page(account)
        return action_page(
            request,
            self,
            account,
            title=str(_("Disable")),
            description=str(_("Stops syncing and settling the account until it is enabled again; its history stays.")),
        )


@admin.register(SyncRun)
class SyncRunAdmin(ReadOnlyModelAdmin):
    list_display = ["created_at", "vendor_account", "status", "trigger", "rows_read", "rows_written", "error_kind"]
    list_filter = ["status", "error_kind", "trigger", "vendor_account__vendor"]
    list_select_related = ["vendor_account"]
    search_fields = ["vendor_account__label", "organization__slug", "error"]
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in SyncRun._meta.fields]


@admin.register(CostRecord)
class CostRecordAdmin(ReadOnlyModelAdmin):
    list_display = [
        "charge_period_start",
        "vendor",
        "vendor_account",
        "service_name",
        "billed_cost",
        "billing_currency",
    ]
    list_filter = ["vendor", "billing_currency"]
    list_select_related = ["vendor_account"]
    search_fields = ["service_name", "project", "source_key"]
    readonly_fields = [f.name for f in CostRecord._meta.fields]


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyModelAdmin):
    list_display = ["charge_period_start", "vendor", "vendor_account", "service_name", "quantity", "unit"]
    list_filter = ["vendor", "unit"]
    list_select_related = ["vendor_account"]
    search_fields = ["service_name", "project", "source_key"]


@admin.register(BalanceObservation)
class BalanceObservationAdmin(ReadOnlyModelAdmin):
    list_display = ["observed_at", "vendor_account", "amount", "currency"]
    list_filter = ["currency"]
    list_select_related = ["vendor_account"]
    search_fields = ["vendor_account__label", "organization__slug"]

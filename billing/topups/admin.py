"""Operator console: saved payment methods, top-up rules and top-ups with their attempts.

Money moves only through services, so top-ups are read-only here; operators may turn rules off
(which cancels their waiting top-ups) from the list.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from billing.payments.models import PaymentMethod
from billing.topups import services
from billing.topups.models import TopUp, TopUpAttempt, TopUpRule


class ReadOnlyMixin:
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(PaymentMethod)
class PaymentMethodAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["__str__", "organization", "gateway", "gateway_reference", "exp_month", "exp_year", "is_default"]
    list_filter = ["gateway", "kind", "wallet"]
    search_fields = ["gateway_reference", "customer_reference", "organization__slug", "last4"]


@admin.register(TopUpRule)
class TopUpRuleAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["__str__", "organization", "trigger", "method", "currency", "enabled", "consecutive_failures",
                    "status_message"]  # fmt: skip
    list_filter = ["enabled", "target_kind", "trigger", "method"]
    search_fields = ["organization__slug", "vendor_account__label"]
    actions = ["disable"]

    @admin.action(description="Turn off the selected rules (cancels their waiting top-ups)", permissions=["disable"])
    def disable(self, request: HttpRequest, queryset: QuerySet[TopUpRule]) -> None:
        for rule in queryset.filter(enabled=True):
            services.top_up_rule_update(rule=rule, data={"enabled": False}, actor=request.user)  # type: ignore[arg-type]
        self.message_user(request, "The selected rules are off.", messages.SUCCESS)

    def has_disable_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("billing.change_topuprule"))


ATTEMPT_FIELDS = ("number", "payment_method_label", "idempotency_key", "outcome", "decline_code", "message",
                  "gateway_reference", "created_at", "finished_at")  # fmt: skip


class TopUpAttemptInline(ReadOnlyMixin, admin.TabularInline):
    model = TopUpAttempt
    fields = ATTEMPT_FIELDS
    readonly_fields = ATTEMPT_FIELDS
    extra = 0


@admin.register(TopUp)
class TopUpAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["__str__", "organization", "target_kind", "vendor_account", "status", "attempt_count",
                    "next_attempt_at", "created_at"]  # fmt: skip
    list_filter = ["status", "target_kind", "currency"]
    search_fields = ["gateway_reference", "organization__slug"]
    inlines = [TopUpAttemptInline]

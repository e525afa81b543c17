"""Operator console: saved payment methods, top-up rules and top-ups with their attempts.

Money moves only through services, so top-ups are read-only here; operators may turn rules off
(which cancels their waiting top-ups) from the list.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from aggregator.tenancy.admin_base import ReadOnlyModelAdmin, ReadOnlyTabularInline, admin_user, require_permission
from billing.payments.models import PaymentMethod
from billing.topups import services
from billing.topups.models import TopUp, TopUpAttempt, TopUpRule


@admin.register(PaymentMethod)
class PaymentMethodAdmin(ReadOnlyModelAdmin):
    list_display = ["__str__", "organization", "gateway", "gateway_reference", "exp_month", "exp_year", "is_default"]
    list_filter = ["gateway", "kind", "wallet"]
    search_fields = ["gateway_reference", "customer_reference", "organization__slug", "last4"]


@admin.register(TopUpRule)
class TopUpRuleAdmin(ReadOnlyModelAdmin):
    list_display = ["__str__", "organization", "trigger", "method", "currency", "enabled", "consecutive_failures",
                    "status_message"]  # fmt: skip
    list_filter = ["enabled", "target_kind", "trigger", "method"]
    search_fields = ["organization__slug", "vendor_account__label"]
    actions = ["disable"]

    @admin.action(description=_("Turn off the selected rules (cancels their waiting top-ups)"), permissions=["disable"])
    def disable(self, request: HttpRequest, queryset: QuerySet[TopUpRule]) -> None:
        require_permission(request, "billing.change_topuprule")
        for rule in queryset.filter(enabled=True):
            services.top_up_rule_update(rule=rule, data={"enabled": False}, actor=admin_user(request))
        self.message_user(request, "The selected rules are off.", messages.SUCCESS)

    def has_disable_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("billing.change_topuprule"))


ATTEMPT_FIELDS = ("number", "payment_method_label", "idempotency_key", "outcome", "decline_code", "message",
                  "gateway_reference", "created_at", "finished_at")  # fmt: skip


class TopUpAttemptInline(ReadOnlyTabularInline):
    model = TopUpAttempt
    fields = ATTEMPT_FIELDS
    readonly_fields = ATTEMPT_FIELDS
    show_change_link = False


@admin.register(TopUp)
class TopUpAdmin(ReadOnlyModelAdmin):
    list_display = ["__str__", "organization", "target_kind", "vendor_account", "status", "attempt_count",
                    "next_attempt_at", "created_at"]  # fmt: skip
    list_filter = ["status", "target_kind", "currency"]
    list_select_related = ["organization", "vendor_account"]
    search_fields = ["gateway_reference", "organization__slug"]
    date_hierarchy = "created_at"
    inlines = [TopUpAttemptInline]

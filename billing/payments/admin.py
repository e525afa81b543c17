"""Operator console: card payments and the gateway events behind them.

Money moves only through services and verified events, so both are read-only here; operators may
process stored events again (e.g. after fixing the cause of a failure).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from billing.payments import services
from billing.payments.records import Payment, WebhookEvent


class ReadOnlyMixin:
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Payment)
class PaymentAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["idempotency_key", "organization", "invoice", "top_up", "amount", "currency", "status",
                    "failure_code", "wallet", "created_at"]  # fmt: skip
    list_filter = ["status", "gateway", "currency", "wallet", "payment_method_type"]
    search_fields = ["idempotency_key", "gateway_reference", "charge_reference", "organization__slug",
                     "invoice__number"]  # fmt: skip
    list_select_related = ["organization", "invoice", "top_up"]


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["event_id", "gateway", "type", "status", "attempts", "received_at", "processed_at"]
    list_filter = ["status", "gateway", "type"]
    search_fields = ["event_id", "type"]
    actions = ["process_again"]

    @admin.action(description="Process the selected events again (failed or unprocessed ones)", permissions=["process"])
    def process_again(self, request: HttpRequest, queryset: QuerySet[WebhookEvent]) -> None:
        pending = queryset.exclude(status__in=[WebhookEvent.Status.PROCESSED, WebhookEvent.Status.IGNORED])
        results = [services.webhook_event_process(webhook_event_id=pk) for pk in pending.values_list("pk", flat=True)]
        failed = sum(1 for r in results if r.status == WebhookEvent.Status.FAILED)
        level = messages.WARNING if failed else messages.SUCCESS
        self.message_user(request, f"Processed {len(results) - failed} event(s); {failed} failed again.", level)

    def has_process_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("billing.change_webhookevent"))

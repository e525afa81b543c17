from __future__ import annotations

from django.contrib import admin

from aggregator.tenancy.admin_base import AuditedModelAdmin
from billing.alerts.models import Alert, AlertPolicy


@admin.register(Alert)
class AlertAdmin(AuditedModelAdmin):
    list_display = ["created_at", "organization", "kind", "subject", "status", "notified_at"]
    list_filter = ["kind", "status"]
    search_fields = ["organization__slug", "message"]
    readonly_fields = [
        "organization",
        "vendor_account",
        "kind",
        "subject",
        "message",
        "details",
        "created_at",
        "resolved_at",
        "notified_at",
    ]


@admin.register(AlertPolicy)
class AlertPolicyAdmin(AuditedModelAdmin):
    list_display = [
        "organization",
        "low_balance_amount",
        "low_balance_days",
        "depletion_within_days",
        "anomaly_factor",
        "sync_failing_hours",
    ]

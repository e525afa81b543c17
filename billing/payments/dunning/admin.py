"""Operator console: dunning policies (one per issuer, edited here, audited) and the dunning queue
(cases and their steps, read-only: only the daily dunning run moves them)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from aggregator.tenancy.admin_base import AuditedModelAdmin, ReadOnlyModelAdmin, ReadOnlyTabularInline
from billing.payments.dunning.models import DunningCase, DunningPolicy, DunningStep


@admin.register(DunningPolicy)
class DunningPolicyAdmin(AuditedModelAdmin):
    list_display = ["issuer", "enabled", "retry_days", "automatic_retries", "send_reminders", "grace_days",
                    "mark_uncollectible"]  # fmt: skip
    list_filter = ["enabled"]


STEP_FIELDS = ("number", "kind", "outcome", "payment_method_label", "decline_code", "message", "payment", "created_at",
               "finished_at")  # fmt: skip


class DunningStepInline(ReadOnlyTabularInline):
    model = DunningStep
    fields = STEP_FIELDS
    readonly_fields = STEP_FIELDS
    show_change_link = False


class QueueFilter(admin.SimpleListFilter):
    title = _("queue")
    parameter_name = "queue"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [("due", _("Active, next step due"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[DunningCase]) -> QuerySet[DunningCase]:
        if self.value() == "due":
            from django.utils import timezone

            return queryset.filter(state=DunningCase.State.ACTIVE, next_step_at__lte=timezone.now())
        return queryset


@admin.register(DunningCase)
class DunningCaseAdmin(ReadOnlyModelAdmin):
    """The dunning queue: active cases first by when their next step is due."""

    list_display = ["invoice", "organization", "state", "opened_by", "steps_done", "next_step_at",
                    "last_failure_code", "opened_at"]  # fmt: skip
    list_filter = [QueueFilter, "state", "opened_by"]
    list_select_related = ["invoice", "organization"]
    search_fields = ["invoice__number", "organization__slug", "organization__name"]
    ordering = ["state", "next_step_at", "pk"]
    readonly_fields = ["steps_ahead"]
    inlines = [DunningStepInline]

    def get_fields(self, request: HttpRequest, obj: DunningCase | None = None) -> list[str]:
        fields = [f for f in super().get_fields(request, obj) if f != "steps_ahead"]
        at = fields.index("next_step_at") + 1 if "next_step_at" in fields else len(fields)
        return [*fields[:at], "steps_ahead", *fields[at:]]

    @admin.display(description=_("Steps ahead"))
    def steps_ahead(self, obj: DunningCase) -> SafeString:
        """The steps still to come, each with the day it falls on, the write-off last."""
        if not obj.is_active:
            return format_html("{}", _("None: the case is closed."))
        count = len(obj.days)
        rows = format_html_join(
            "",
            "<li>{} — {}</li>",
            (
                (
                    _("Step %(n)d") % {"n": n} if n <= count else _("Write-off"),
                    obj.step_due(n).strftime("%Y-%m-%d %H:%M UTC"),
                )
                for n in range(obj.steps_done + 1, count + 2)
            ),
        )
        return format_html("<ul>{}</ul>", rows)

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.urls import URLPattern, path

from aggregator.system.admin_dashboard import operator_dashboard
from aggregator.system.models import Heartbeat
from aggregator.tenancy.admin_base import ReadOnlyModelAdmin


@admin.register(Heartbeat)
class HeartbeatAdmin(ReadOnlyModelAdmin):
    list_display = ["id", "requested_at", "processed_at", "worker_hostname", "worker_pid"]
    readonly_fields = ("id", "requested_at", "processed_at", "worker_hostname", "worker_pid")

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return bool(request.user.has_perm("system.delete_heartbeat"))


def _console_urls() -> list[URLPattern]:
    """Pages of the console that are not a model's (unfold's admin site adds them before its own)."""
    return [path("dashboard/", admin.site.admin_view(operator_dashboard), name="dashboard")]


# The unfold site (installed as admin.site) calls ``extra_urls`` when it builds its URLs.
admin.site.extra_urls = _console_urls  # type: ignore[attr-defined]

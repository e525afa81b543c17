from django.contrib import admin

from aggregator.system.models import Heartbeat


@admin.register(Heartbeat)
class HeartbeatAdmin(admin.ModelAdmin[Heartbeat]):
    list_display = ["id", "requested_at", "processed_at", "worker_hostname", "worker_pid"]
    readonly_fields = ("id", "requested_at", "processed_at", "worker_hostname", "worker_pid")

    def has_add_permission(self, request: object) -> bool:
        return False

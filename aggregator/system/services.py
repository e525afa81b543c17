"""Health: database, broker and worker round trips."""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from aggregator.system.models import Heartbeat


@transaction.atomic
def heartbeat_request() -> Heartbeat:
    """Write a heartbeat and queue it for a worker once the row is committed."""
    from aggregator.system.tasks import heartbeat_process

    heartbeat = Heartbeat.objects.create()
    heartbeat_process.delay_on_commit(heartbeat.pk)
    return heartbeat


def heartbeat_process(*, heartbeat_id: int) -> None:
    """Mark the heartbeat as processed by this process. Running it twice keeps the first answer."""
    Heartbeat.objects.filter(pk=heartbeat_id, processed_at__isnull=True).update(
        processed_at=timezone.now(), worker_hostname=socket.gethostname(), worker_pid=os.getpid()
    )


def health_status() -> tuple[bool, dict[str, Any]]:
    """Database and broker reachability, and the age of the last worker round trip."""
    report: dict[str, Any] = {}
    healthy = True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        report["database"] = {"ok": True, "vendor": connection.vendor}
    except Exception as exc:
        healthy = False
        report["database"] = {"ok": False, "error": type(exc).__name__}
    try:
        from aggregator.celery import app

        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            transport = conn.transport_cls
        report["broker"] = {"ok": True, "transport": str(transport)}
    except Exception as exc:
        healthy = False
        report["broker"] = {"ok": False, "error": type(exc).__name__}
    if report["database"]["ok"]:
        last = Heartbeat.objects.filter(processed_at__isnull=False).order_by("-processed_at").first()
        report["worker"] = {
            "last_heartbeat": last.processed_at.isoformat() if last and last.processed_at else None,
            "recent": bool(last and last.processed_at and timezone.now() - last.processed_at < timedelta(minutes=10)),
        }
    report["debug"] = settings.DEBUG
    return healthy, report

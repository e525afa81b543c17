from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from aggregator.system.services import health_status, heartbeat_request


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the database and the broker answer, 503 otherwise."""
    healthy, report = health_status()
    return JsonResponse({"status": "ok" if healthy else "unavailable", **report}, status=200 if healthy else 503)


@never_cache
@require_POST
@staff_member_required
def worker_check(request: HttpRequest) -> JsonResponse:
    """Operators: queue a heartbeat; /healthz shows when a worker processed it."""
    heartbeat = heartbeat_request()
    return JsonResponse({"heartbeat_id": heartbeat.pk, "status": "queued"}, status=202)

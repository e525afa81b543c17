from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from aggregator.tenancy.scoping import OrganizationScopedMixin
from billing.alerts.models import Alert


class AlertSerializer(serializers.ModelSerializer):
    class Meta:
        model = Alert
        fields = ["id", "kind", "status", "vendor_account", "message", "details", "created_at", "resolved_at"]


class AlertViewSet(OrganizationScopedMixin, viewsets.ReadOnlyModelViewSet):
    """Alerts of the organization, newest first; `?status=open` for the ongoing ones."""

    queryset = Alert.objects.all()
    serializer_class = AlertSerializer

    @extend_schema(parameters=[OpenApiParameter("status", str, enum=["open", "resolved"])])
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    def get_queryset(self) -> Any:
        alerts = super().get_queryset()
        status = self.request.query_params.get("status")
        return alerts.filter(status=status) if status in Alert.Status.values else alerts

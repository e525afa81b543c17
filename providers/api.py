"""API: vendor accounts, sync runs, cost records and daily rollups (tenant-scoped)."""

from __future__ import annotations

from typing import Any

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, PolymorphicProxySerializer, extend_schema, extend_schema_field
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aggregator.api.exceptions import ApplicationError
from aggregator.tenancy.context import actor_for_request, organization_for_request
from aggregator.tenancy.scoping import OrganizationScopedMixin, scoped
from providers import selectors, services
from providers.connectors.base import connector_classes
from providers.connectors.csv_import import CsvImportError
from providers.focus import focus_csv_lines
from providers.models import CostRecord, SyncRun, VendorAccount


def _credentials_serializers() -> list[type[serializers.Serializer]]:
    """One schema component per vendor, from its connector's credential fields."""
    result = []
    for slug, cls in sorted(connector_classes().items()):
        fields = {
            f.name: serializers.CharField(required=f.required, help_text=f"{f.label}. {f.help}", write_only=True)
            for f in cls.credential_fields
        }
        name = "".join(part.title() for part in slug.split("_")) + "Credentials"
        result.append(type(name, (serializers.Serializer,), fields))
    return result


@extend_schema_field(
    PolymorphicProxySerializer(
        component_name="VendorCredentials",
        serializers=_credentials_serializers(),
        resource_type_field_name=None,
    )
)
class CredentialsField(serializers.JSONField):
    """Write-only: credentials go in, only masks come out."""


class VendorAccountSerializer(serializers.ModelSerializer):
    credentials = CredentialsField(write_only=True, help_text="Vendor-specific credential object (write-only).")
    credentials_masked = serializers.JSONField(read_only=True)

    class Meta:
        model = VendorAccount
        fields = [
            "id",
            "vendor",
            "label",
            "credentials",
            "credentials_masked",
            "api_base",
            "status",
            "status_message",
            "sync_interval_minutes",
            "trailing_days",
            "sync_cursor",
            "last_sync_at",
            "last_success_at",
            "failure_streak",
            "created_at",
        ]
        read_only_fields = [
            "status",
            "status_message",
            "sync_cursor",
            "last_sync_at",
            "last_success_at",
            "failure_streak",
            "created_at",
            "credentials_masked",
        ]

    def get_fields(self) -> dict[str, Any]:
        fields = super().get_fields()
        if self.instance is not None and not isinstance(self.instance, list):
            fields["vendor"].read_only = True
            fields["credentials"].required = False
        return fields


class SyncRequestSerializer(serializers.Serializer):
    start = serializers.DateTimeField(required=False, help_text="Window start (default: trailing days).")
    end = serializers.DateTimeField(required=False, help_text="Window end (default: now).")


class SyncRunSerializer(serializers.ModelSerializer):
    duration_seconds = serializers.FloatField(read_only=True, allow_null=True)

    class Meta:
        model = SyncRun
        fields = [
            "id",
            "vendor_account",
            "status",
            "trigger",
            "window_start",
            "window_end",
            "rows_read",
            "rows_written",
            "error_kind",
            "error",
            "created_at",
            "started_at",
            "finished_at",
            "duration_seconds",
        ]


class CheckResultSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    message = serializers.CharField()


class VendorAccountViewSet(OrganizationScopedMixin, viewsets.ModelViewSet):
    """Linked vendor accounts. Credentials are write-only; responses show masks such as `sk-admin-…def`."""

    queryset = VendorAccount.objects.all()
    serializer_class = VendorAccountSerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def _call(self, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs, **actor_for_request(self.request))
        except services.VendorAccountError as exc:
            raise ApplicationError(str(exc)) from None

    def perform_create(self, serializer: Any) -> None:
        data = serializer.validated_data
        serializer.instance = self._call(
            services.vendor_account_create,
            organization=organization_for_request(self.request),
            vendor=data["vendor"],
            label=data["label"],
            credentials=data["credentials"],
            api_base=data.get("api_base", ""),
        )

    def perform_update(self, serializer: Any) -> None:
        data = serializer.validated_data
        account = self._call(
            services.vendor_account_update,
            account=serializer.instance,
            label=data.get("label"),
            credentials=data.get("credentials"),
            api_base=data.get("api_base"),
        )
        for name in ("sync_interval_minutes", "trailing_days"):
            if name in data:
                setattr(account, name, data[name])
        account.save()
        serializer.instance = account

    def perform_destroy(self, instance: VendorAccount) -> None:
        self._call(services.vendor_account_delete, account=instance)

    @extend_schema(request=None, responses=CheckResultSerializer)
    @action(detail=True, methods=["post"])
    def test(self, request: Request, pk: str | None = None, **kwargs: Any) -> Response:
        """Ask the vendor whether the credentials work (nothing is written)."""
        result = services.vendor_account_test(account=self.get_object())
        return Response({"ok": result.ok, "message": result.message})

    @extend_schema(request=SyncRequestSerializer, responses={202: SyncRunSerializer})
    @action(detail=True, methods=["post"])
    def sync(self, request: Request, pk: str | None = None, **kwargs: Any) -> Response:
        """Queue a sync; answers at once with the run, whose status `GET /sync-runs/{id}/` shows."""
        body = SyncRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            run = services.sync_run_request(
                account=self.get_object(),
                trigger=SyncRun.Trigger.API,
                start=body.validated_data.get("start"),
                end=body.validated_data.get("end"),
            )
        except services.VendorAccountError as exc:
            raise ApplicationError(str(exc)) from None
        return Response(SyncRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class SyncRunViewSet(OrganizationScopedMixin, viewsets.ReadOnlyModelViewSet):
    queryset = SyncRun.objects.all()
    serializer_class = SyncRunSerializer

    @extend_schema(parameters=[OpenApiParameter("vendor_account", int, description="Only this account's runs.")])
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    def get_queryset(self) -> Any:
        runs = super().get_queryset()
        account = self.request.query_params.get("vendor_account")
        return runs.filter(vendor_account_id=account) if account and account.isdigit() else runs


class CostRecordSerializer(serializers.ModelSerializer):
    vendor_account: serializers.PrimaryKeyRelatedField = serializers.PrimaryKeyRelatedField(read_only=True)

    class Meta:
        model = CostRecord
        fields = [
            "id",
            "vendor",
            "vendor_account",
            "charge_period_start",
            "charge_period_end",
            "service_name",
            "charge_description",
            "project",
            "consumed_quantity",
            "consumed_unit",
            "billed_cost",
            "billing_currency",
        ]


class CostFilterSerializer(serializers.Serializer):
    vendor = serializers.CharField(required=False)
    account = serializers.IntegerField(required=False, min_value=1)
    start = serializers.DateField(required=False, help_text="First UTC day (inclusive).")
    end = serializers.DateField(required=False, help_text="Last UTC day (inclusive).")
    model = serializers.CharField(required=False)
    project = serializers.CharField(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("start") and attrs.get("end") and attrs["end"] < attrs["start"]:
            raise serializers.ValidationError({"end": "end must be on or after start."})
        return attrs


def filtered_costs(request: Request) -> Any:
    params = CostFilterSerializer(data=request.query_params)
    params.is_valid(raise_exception=True)
    data = params.validated_data
    return selectors.cost_records_filter(
        organization=organization_for_request(request),  # type: ignore[arg-type]
        vendor=data.get("vendor"),
        vendor_account_id=data.get("account"),
        start=data.get("start"),
        end=data.get("end"),
        model=data.get("model"),
        project=data.get("project"),
    )


class CostRecordViewSet(OrganizationScopedMixin, viewsets.ReadOnlyModelViewSet):
    """Normalized cost rows with FOCUS names in snake case. Filters: vendor, account, start, end, model, project."""

    queryset = CostRecord.objects.all()
    serializer_class = CostRecordSerializer

    @extend_schema(parameters=[CostFilterSerializer])
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    def get_queryset(self) -> Any:
        if self.action == "list":
            return filtered_costs(self.request).order_by("charge_period_start", "id")
        return super().get_queryset()


class DailyCostSerializer(serializers.Serializer):
    date = serializers.DateField()
    vendor = serializers.CharField(required=False)
    model = serializers.CharField(required=False)
    billed_cost = serializers.DecimalField(max_digits=28, decimal_places=10)
    billing_currency = serializers.CharField()


class CostsDailyApi(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Billed cost per UTC day and vendor (`group_by=vendor`, default) or model (`group_by=model`)."""

    serializer_class = DailyCostSerializer

    @extend_schema(
        parameters=[CostFilterSerializer, OpenApiParameter("group_by", str, enum=["vendor", "model"])],
        responses=DailyCostSerializer(many=True),
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        group_by = request.query_params.get("group_by", "vendor")
        if group_by not in ("vendor", "model"):
            raise ApplicationError("group_by must be 'vendor' or 'model'.", code="validation_error")
        rows = selectors.costs_daily(records=filtered_costs(request), group_by=group_by)
        page = self.paginate_queryset(rows)  # type: ignore[arg-type]
        return self.get_paginated_response(DailyCostSerializer(page, many=True).data)


class FocusExportApi(APIView):
    """FOCUS CSV of the organization's cost records; `start`/`end` are inclusive UTC days."""

    @extend_schema(parameters=[CostFilterSerializer], responses={(200, "text/csv"): OpenApiTypes.STR})
    def get(self, request: Request) -> StreamingHttpResponse:
        records = filtered_costs(request)
        organization = organization_for_request(request)
        name = f"focus-{organization.slug if organization else 'costs'}"
        if request.query_params.get("start") or request.query_params.get("end"):
            name += f"-{request.query_params.get('start', '')}-{request.query_params.get('end', '')}"
        response = StreamingHttpResponse(focus_csv_lines(records=records), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{name}.csv"'
        return response


class CostImportSerializer(serializers.Serializer):
    vendor_account = serializers.IntegerField(help_text="A `file_import` vendor account of your organization.")
    file = serializers.FileField(help_text="CSV in the documented format (docs/cost-import-format.md).")


class CostImportApi(APIView):
    """Import a cost CSV: validated as a whole, all rows or none. Errors list every bad line."""

    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(request={"multipart/form-data": CostImportSerializer}, responses={201: SyncRunSerializer})
    def post(self, request: Request) -> Response:
        body = CostImportSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        account = (
            scoped(VendorAccount, organization_for_request(request))
            .filter(pk=body.validated_data["vendor_account"])
            .first()
        )
        if account is None:
            raise NotFound()
        try:
            run = services.cost_file_import(
                account=account, content=body.validated_data["file"].read(), **actor_for_request(request)
            )
        except services.VendorAccountError as exc:
            raise ApplicationError(str(exc)) from None
        except CsvImportError as exc:
            lines = [{"line": e.line, "column": e.column, "message": e.message} for e in exc.errors]
            return Response(
                {"error": {"code": "invalid_csv", "message": str(exc), "lines": lines}},
                status=status.HTTP_400_BAD_REQUEST,
            )
        return Response(SyncRunSerializer(run).data, status=status.HTTP_201_CREATED)

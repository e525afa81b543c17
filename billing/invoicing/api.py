"""API: invoices (list, detail with lines, PDF, usage CSV), credit notes, and operator actions."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.http import FileResponse, HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from aggregator.api.exceptions import ApplicationError
from aggregator.tenancy.context import actor_for_request
from aggregator.tenancy.scoping import OrganizationScopedMixin
from billing.invoicing import services
from billing.invoicing.models import CreditNote, Invoice, InvoiceLine

MONEY = {"max_digits": 28, "decimal_places": 10, "read_only": True}


class InvoiceLineSerializer(serializers.ModelSerializer):
    class Meta:
        model = InvoiceLine
        fields = [
            "kind",
            "vendor",
            "vendor_label",
            "description",
            "quantity",
            "unit",
            "original_amount",
            "original_currency",
            "rate",
            "amount",
            "tax_rate",
        ]


class InvoiceSerializer(serializers.ModelSerializer):
    balance_due = serializers.DecimalField(
        max_digits=28,
        decimal_places=10,
        read_only=True,
        help_text="Still owed: amount due less credit notes and net payments (negative: overpaid).",
    )

    class Meta:
        model = Invoice
        fields = [
            "id",
            "number",
            "status",
            "period_start",
            "period_end",
            "currency",
            "issue_date",
            "due_date",
            "subtotal",
            "tax_total",
            "total",
            "wallet_credit_applied",
            "payments_applied",
            "amount_due",
            "amount_paid",
            "amount_credited",
            "amount_refunded",
            "balance_due",
            "tax_breakdown",
            "tax_note",
            "pdf_sha256",
            "finalized_at",
        ]


class InvoiceDetailSerializer(InvoiceSerializer):
    lines = InvoiceLineSerializer(many=True, read_only=True)
    tax = serializers.DecimalField(source="tax_total", **MONEY)  # type: ignore[arg-type]

    class Meta(InvoiceSerializer.Meta):
        fields = [*InvoiceSerializer.Meta.fields, "tax", "lines", "customer", "issuer_snapshot"]


class IsOperator(permissions.BasePermission):
    message = "Only the operator's staff can do this."

    def has_permission(self, request: Request, view: Any) -> bool:
        return bool(request.user and request.user.is_staff)


class AmountReasonSerializer(serializers.Serializer):
    amount = serializers.DecimalField(max_digits=28, decimal_places=10)
    reason = serializers.CharField()


class CreditNoteRequestSerializer(AmountReasonSerializer):
    refund = serializers.BooleanField(
        default=True, help_text="Refund what the customer paid beyond the new balance to their card payments."
    )


class InvoiceViewSet(OrganizationScopedMixin, viewsets.ReadOnlyModelViewSet):
    """Invoices of the organization. Drafts stay with the operator until finalized."""

    queryset = Invoice.objects.select_related("issuer")
    serializer_class = InvoiceSerializer

    def get_queryset(self) -> Any:
        invoices = super().get_queryset()
        return invoices if self.request.user.is_staff else invoices.exclude(status=Invoice.Status.DRAFT)

    def get_serializer_class(self) -> Any:
        return InvoiceDetailSerializer if self.action != "list" else InvoiceSerializer

    @extend_schema(responses={(200, "application/pdf"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"])
    def pdf(self, request: Request, pk: str | None = None, **kwargs: Any) -> FileResponse:
        invoice = self.get_object()
        if not invoice.pdf:
            raise NotFound("The PDF is being prepared; try again in a minute.")
        return FileResponse(
            invoice.pdf.open("rb"), content_type="application/pdf", as_attachment=True, filename=f"{invoice.number}.pdf"
        )

    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.STR})
    @action(detail=True, methods=["get"], url_path="usage.csv")
    def usage_csv(self, request: Request, pk: str | None = None, **kwargs: Any) -> HttpResponse:
        from billing.invoicing.delivery import invoice_usage_csv

        invoice = self.get_object()
        response = HttpResponse(invoice_usage_csv(invoice=invoice), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="usage-{invoice.number or invoice.pk}.csv"'
        return response

    def _operator_action(self, fn: Any, **kwargs: Any) -> Response:
        try:
            result = fn(**kwargs)
        except services.InvoiceError as exc:
            raise ApplicationError(str(exc)) from None
        if isinstance(result, CreditNote):
            return Response(CreditNoteSerializer(result).data, status=status.HTTP_201_CREATED)
        return Response(InvoiceDetailSerializer(result).data)

    @extend_schema(request=None, responses=InvoiceDetailSerializer)
    @action(detail=True, methods=["post"], permission_classes=[IsOperator])
    def finalize(self, request: Request, pk: str | None = None, **kwargs: Any) -> Response:
        invoice = self.get_object()
        return self._operator_action(services.invoice_finalize, invoice_id=invoice.pk, **actor_for_request(request))

    @extend_schema(request=None, responses=InvoiceDetailSerializer)
    @action(detail=True, methods=["post"], permission_classes=[IsOperator])
    def void(self, request: Request, pk: str | None = None, **kwargs: Any) -> Response:
        invoice = self.get_object()
        return self._operator_action(
            services.invoice_void, invoice_id=invoice.pk, actor=actor_for_request(request)["actor"]
        )

    @extend_schema(request=CreditNoteRequestSerializer, responses={201: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"], url_path="credit-notes", permission_classes=[IsOperator])
    def credit_note(self, request: Request, pk: str | None = None, **kwargs: Any) -> Response:
        invoice = self.get_object()
        body = CreditNoteRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return self._operator_action(
            services.credit_note_issue,
            invoice_id=invoice.pk,
            amount=Decimal(body.validated_data["amount"]),
            reason=body.validated_data["reason"],
            refund=body.validated_data["refund"],
            actor=actor_for_request(request)["actor"],
        )

    @extend_schema(request=None, responses={202: None})
    @action(detail=True, methods=["post"], permission_classes=[IsOperator])
    def resend(self, request: Request, pk: str | None = None, **kwargs: Any) -> Response:
        from billing.invoicing.delivery import invoice_email_send

        invoice = self.get_object()
        if invoice.is_draft:
            raise ApplicationError("Drafts are not emailed: finalize the invoice first.")
        invoice_email_send(invoice_id=invoice.pk, resend=True)
        return Response(status=status.HTTP_202_ACCEPTED)


class CreditNoteSerializer(serializers.ModelSerializer):
    invoice_number = serializers.CharField(source="invoice.number", read_only=True)

    class Meta:
        model = CreditNote
        fields = [
            "id",
            "number",
            "invoice",
            "invoice_number",
            "amount",
            "tax_amount",
            "refund_amount",
            "amount_refunded",
            "reason",
            "issue_date",
        ]


class CreditNoteViewSet(OrganizationScopedMixin, viewsets.ReadOnlyModelViewSet):
    queryset = CreditNote.objects.select_related("invoice")
    serializer_class = CreditNoteSerializer

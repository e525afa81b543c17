"""API: credit purchases and grants, vendor balances with runway, and the prepaid wallet."""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aggregator.api.exceptions import ApplicationError
from aggregator.tenancy.context import actor_for_request, organization_for_request
from aggregator.tenancy.scoping import OrganizationScopedMixin
from billing.ledger import selectors, services
from billing.ledger.models import CreditPurchase
from providers.models import VendorAccount

AMOUNT = {"max_digits": 28, "decimal_places": 10}


class PurchaseSerializer(serializers.ModelSerializer):
    amount = serializers.DecimalField(**AMOUNT, min_value=0)  # type: ignore[arg-type]
    kind = serializers.ChoiceField(choices=CreditPurchase.Kind.choices)

    class Meta:
        model = CreditPurchase
        fields = [
            "id",
            "kind",
            "amount",
            "currency",
            "effective_at",
            "expires_at",
            "note",
            "expired_amount",
            "created_at",
        ]
        read_only_fields = ["id", "expired_amount", "created_at"]


class RunwaySerializer(serializers.Serializer):
    balance = serializers.DecimalField(**AMOUNT)  # type: ignore[arg-type]
    currency = serializers.CharField()
    burn_rate_per_day = serializers.DecimalField(**AMOUNT)  # type: ignore[arg-type]
    runway_days = serializers.DecimalField(max_digits=12, decimal_places=1, allow_null=True)
    depletion_date = serializers.DateField(allow_null=True)


def runway_data(runway: selectors.Runway) -> dict[str, Any]:
    return {
        "balance": runway.balance,
        "currency": runway.currency,
        "burn_rate_per_day": runway.burn_rate_per_day,
        "runway_days": runway.runway_days,
        "depletion_date": runway.depletion_date,
    }


class VendorAccountLedgerViewSet(OrganizationScopedMixin, viewsets.GenericViewSet):
    """Credits and balance of one vendor account."""

    queryset = VendorAccount.objects.all()
    serializer_class = PurchaseSerializer

    @extend_schema(methods=["GET"], responses=PurchaseSerializer(many=True))
    @extend_schema(methods=["POST"], request=PurchaseSerializer, responses={201: PurchaseSerializer})
    @action(detail=True, methods=["get", "post"])
    def purchases(self, request: Request, pk: str | None = None, **kwargs: Any) -> Response:
        """Credits bought or granted at the vendor. Send an `Idempotency-Key` header to make retries safe."""
        account = self.get_object()
        if request.method == "GET":
            page = self.paginate_queryset(account.purchases.order_by("-effective_at", "-id"))
            return self.get_paginated_response(PurchaseSerializer(page, many=True).data)
        body = PurchaseSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        try:
            purchase = services.credit_purchase_record(
                vendor_account=account,
                amount=data["amount"],
                currency=data["currency"],
                kind=data["kind"],
                effective_at=data["effective_at"],
                expires_at=data.get("expires_at"),
                note=data.get("note", ""),
                client_key=request.headers.get("Idempotency-Key") or None,
                **actor_for_request(request),
            )
        except services.LedgerInputError as exc:
            raise ApplicationError(str(exc), code="validation_error") from None
        return Response(PurchaseSerializer(purchase).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses=RunwaySerializer)
    @action(detail=True, methods=["get"])
    def balance(self, request: Request, pk: str | None = None, **kwargs: Any) -> Response:
        """Prepaid balance at the vendor, burn rate (median of the last 14 days), runway and depletion date."""
        account = self.get_object()
        result = selectors.vendor_account_runway(vendor_account=account, today=timezone.now().date())
        return Response(RunwaySerializer(runway_data(result)).data)


class WalletApi(APIView):
    """The organization's prepaid wallet: balance, burn rate, runway and credit limit."""

    @extend_schema(responses=RunwaySerializer)
    def get(self, request: Request) -> Response:
        organization = organization_for_request(request)
        assert organization is not None
        result = selectors.wallet_runway(organization=organization, today=timezone.now().date())
        data = RunwaySerializer(runway_data(result)).data
        data["credit_limit"] = str(organization.credit_limit)
        data["billing_mode"] = organization.billing_mode
        return Response(data)

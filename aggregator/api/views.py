"""API: the current organization and its members."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aggregator.api.exceptions import ApplicationError
from aggregator.tenancy.context import actor_for_request, organization_for_request
from aggregator.tenancy.models import Membership, Organization, Role
from aggregator.tenancy.scoping import OrganizationScopedMixin
from aggregator.tenancy.services import TenancyError, audit_record, membership_remove, membership_update_role


class OrganizationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Organization
        fields = [
            "slug",
            "name",
            "legal_name",
            "address",
            "country",
            "tax_id",
            "currency",
            "locale",
            "billing_mode",
            "payment_terms_days",
            "billing_email",
            "created_at",
        ]
        # Slug, currency and billing mode change how money is recorded: operators change them.
        read_only_fields = ["slug", "currency", "billing_mode", "payment_terms_days", "created_at"]


class OrganizationCurrentApi(APIView):
    """The organization the caller acts for (the API key's, or the portal's selected one)."""

    @extend_schema(responses=OrganizationSerializer)
    def get(self, request: Request) -> Response:
        return Response(OrganizationSerializer(organization_for_request(request)).data)

    @extend_schema(request=OrganizationSerializer, responses=OrganizationSerializer)
    def patch(self, request: Request) -> Response:
        organization = organization_for_request(request)
        serializer = OrganizationSerializer(organization, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        before = {k: v for k, v in OrganizationSerializer(organization).data.items() if k in serializer.validated_data}
        serializer.save()
        audit_record(
            action="organization.update",
            organization=organization,
            obj=organization,
            **actor_for_request(request),
            before=before,
            after={k: str(v) for k, v in serializer.validated_data.items()},
        )
        return Response(serializer.data)


class MemberSerializer(serializers.ModelSerializer):
    email = serializers.EmailField(source="user.email", read_only=True)
    full_name = serializers.CharField(source="user.full_name", read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "email", "full_name", "role", "created_at"]
        read_only_fields = ["id", "email", "full_name", "created_at"]


class MemberViewSet(
    OrganizationScopedMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Members of the current organization. Owners change roles and remove members."""

    queryset = Membership.objects.select_related("user").order_by("created_at", "id")
    serializer_class = MemberSerializer
    write_role = Role.OWNER

    def perform_update(self, serializer: Any) -> None:
        try:
            serializer.instance = membership_update_role(
                membership=serializer.instance,
                role=serializer.validated_data.get("role", serializer.instance.role),
                **actor_for_request(self.request),
            )
        except TenancyError as exc:
            raise ApplicationError(str(exc), code="last_owner") from None

    def perform_destroy(self, instance: Membership) -> None:
        try:
            membership_remove(membership=instance, **actor_for_request(self.request))
        except TenancyError as exc:
            raise ApplicationError(str(exc), code="last_owner") from None

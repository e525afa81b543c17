"""API: automatic top-up rules, the top-ups they made (with every attempt and decline reason),
and the saved payment methods they charge. Tenant-scoped; writes need the billing-admin role."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils import timezone
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.exceptions import ValidationError

from aggregator.api.exceptions import ApplicationError
from aggregator.tenancy.context import actor_for_request, organization_for_request
from aggregator.tenancy.scoping import OrganizationScopedMixin, scoped
from billing.payments.models import PaymentMethod
from billing.topups import selectors, services
from billing.topups.models import TopUp, TopUpAttempt, TopUpRule
from providers.models import VendorAccount


class PaymentMethodSerializer(serializers.ModelSerializer):
    class Meta:
        model = PaymentMethod
        fields = ["id", "gateway", "kind", "label", "brand", "last4", "exp_month", "exp_year", "wallet", "is_default",
                  "created_at"]  # fmt: skip
        read_only_fields = ["id", "gateway", "kind", "label", "brand", "last4", "exp_month", "exp_year", "wallet",
                            "created_at"]  # fmt: skip


class ScopedChoice(serializers.PrimaryKeyRelatedField):
    """An id of one of the caller's organization's objects; other ids read as not found."""

    def __init__(self, model: type[models.Model], noun: str, **kwargs: Any) -> None:
        self.model = model
        kwargs.setdefault("error_messages", {
            "does_not_exist": f"No {noun} with id {{pk_value}} in your organization: use the id of one of yours.",
            "incorrect_type": f"Give the {noun}'s id as a number, not {{data_type}}.",
        })  # fmt: skip
        super().__init__(queryset=model._default_manager.none(), **kwargs)

    def get_queryset(self) -> Any:
        return scoped(self.model, organization_for_request(self.context["request"]))


class TopUpRuleSerializer(serializers.ModelSerializer):
    vendor_account = ScopedChoice(VendorAccount, "vendor account", required=False, allow_null=True)
    primary_method = ScopedChoice(PaymentMethod, "payment method")
    fallback_method = ScopedChoice(PaymentMethod, "payment method", required=False, allow_null=True)
    currency = serializers.CharField(
        required=False, allow_blank=True, help_text="The target's currency; derived from it when left out."
    )
    preview = serializers.SerializerMethodField()

    class Meta:
        model = TopUpRule
        fields = [
            "id", "target_kind", "vendor_account", "currency", "trigger", "threshold_amount", "threshold_days",
            "method", "amount", "target_balance", "minimum_amount", "maximum_amount", "monthly_cap", "primary_method",
            "fallback_method", "enabled", "consecutive_failures", "disabled_reason", "status_message", "preview",
            "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = ["id", "consecutive_failures", "disabled_reason", "status_message", "preview",
                            "created_at", "updated_at"]  # fmt: skip

    def get_preview(self, rule: TopUpRule) -> str:
        """How often the rule tops up at the current burn rate, in a sentence."""
        return selectors.top_up_rule_preview(rule=rule, today=timezone.now().date())


class TopUpAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = TopUpAttempt
        fields = ["number", "payment_method", "payment_method_label", "is_fallback", "idempotency_key", "outcome",
                  "decline_code", "message", "gateway_reference", "created_at", "finished_at"]  # fmt: skip
        read_only_fields = fields


class TopUpSerializer(serializers.ModelSerializer):
    attempts = TopUpAttemptSerializer(many=True, read_only=True)

    class Meta:
        model = TopUp
        fields = [
            "id", "rule", "target_kind", "vendor_account", "amount", "currency", "status", "attempt_count",
            "next_attempt_at", "last_decline_code", "last_error", "action_url", "gateway", "gateway_reference",
            "attempts", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = fields


class TopUpRuleViewSet(OrganizationScopedMixin, viewsets.ModelViewSet):
    """Automatic top-up rules: when a vendor account's credits (or the prepaid wallet) run low, charge
    a saved payment method. A rule whose target is already below its threshold tops up at once."""

    queryset = TopUpRule.objects.select_related("organization", "vendor_account", "primary_method", "fallback_method")
    serializer_class = TopUpRuleSerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def perform_create(self, serializer: Any) -> None:
        organization = organization_for_request(self.request)
        assert organization is not None
        serializer.instance = self._call(
            services.top_up_rule_create, organization=organization, data=serializer.validated_data
        )

    def perform_update(self, serializer: Any) -> None:
        serializer.instance = self._call(
            services.top_up_rule_update, rule=serializer.instance, data=serializer.validated_data
        )

    def perform_destroy(self, instance: TopUpRule) -> None:
        services.top_up_rule_delete(rule=instance, **actor_for_request(self.request))

    def _call(self, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs, **actor_for_request(self.request))
        except services.TopUpRuleInvalid as exc:
            raise ValidationError(exc.errors) from None


class TopUpViewSet(OrganizationScopedMixin, viewsets.ReadOnlyModelViewSet):
    """Top-ups made by the rules, newest first, with every attempt and its decline reason.
    Filter with `?status=` and `?rule=`."""

    queryset = TopUp.objects.prefetch_related("attempts")
    serializer_class = TopUpSerializer

    def get_queryset(self) -> Any:
        queryset = super().get_queryset()
        params = self.request.query_params
        if params.get("status"):
            queryset = queryset.filter(status=params["status"])
        if params.get("rule"):
            if not params["rule"].isdigit():
                raise ApplicationError("rule must be the id of a top-up rule, e.g. ?rule=3.", code="validation_error")
            queryset = queryset.filter(rule_id=int(params["rule"]))
        return queryset


class PaymentMethodViewSet(
    OrganizationScopedMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Saved payment methods (brand, last four digits and expiry only). `PATCH {"is_default": true}`
    makes one the default; deleting one that a top-up rule charges first is refused."""

    queryset = PaymentMethod.objects.all()
    serializer_class = PaymentMethodSerializer
    http_method_names = ["get", "patch", "delete", "head", "options"]

    def perform_update(self, serializer: Any) -> None:
        data = serializer.validated_data
        if "is_default" in data:
            serializer.instance = services.payment_method_set_default(
                payment_method=serializer.instance, is_default=data["is_default"], **actor_for_request(self.request)
            )

    def perform_destroy(self, instance: PaymentMethod) -> None:
        try:
            services.payment_method_delete(payment_method=instance, **actor_for_request(self.request))
        except services.PaymentMethodInUse as exc:
            raise ApplicationError(
                str(exc), code="payment_method_in_use", status_code=status.HTTP_409_CONFLICT
            ) from None

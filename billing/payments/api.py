"""API: ``POST /api/v1/invoices/{id}/pay/`` starts (or resumes) a card payment of an invoice.

The answer carries the PaymentIntent's client secret and the publishable key; the portal then
calls ``stripe.confirmCardPayment(client_secret, {payment_method: {card: cardElement}})`` with
Stripe.js, so card data goes from the browser to Stripe and never through us. The invoice is
marked paid when Stripe's signed ``payment_intent.succeeded`` event arrives, not by the browser.
"""

from __future__ import annotations

import logging
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from aggregator.api.exceptions import ApplicationError
from aggregator.tenancy.context import actor_for_request
from aggregator.tenancy.scoping import OrganizationScopedMixin
from aggregator.tenancy.services import audit_record
from billing.invoicing.models import Invoice
from billing.payments import services
from billing.payments.gateways.base import PaymentConfigurationError, PaymentError, PaymentTemporaryFailure
from billing.payments.records import Payment

logger = logging.getLogger(__name__)


class InvoicePaymentSerializer(serializers.Serializer):
    payment = serializers.IntegerField(source="payment.pk", help_text="Our payment attempt.")
    payment_intent = serializers.CharField(help_text="Stripe's PaymentIntent id (pi_…).")
    client_secret = serializers.CharField(help_text="For stripe.confirmCardPayment; do not log or store it.")
    publishable_key = serializers.CharField()
    stripe_js_url = serializers.CharField(source="js_url")
    amount = serializers.SerializerMethodField(help_text='What is left to pay, e.g. "120.50" (JPY: "12345").')
    currency = serializers.CharField()
    attempt = serializers.IntegerField(source="payment.attempt")
    last_error = serializers.SerializerMethodField(help_text="Why the previous attempt failed, if it did.")

    def get_amount(self, result: services.InvoicePaymentIntent) -> str:
        return str(result.amount)

    def get_last_error(self, result: services.InvoicePaymentIntent) -> str:
        previous = (
            Payment.objects.filter(invoice=result.payment.invoice, status=Payment.Status.FAILED)
            .exclude(pk=result.payment.pk)
            .order_by("-attempt")
            .first()
        )
        return previous.failure_message if previous is not None else ""


class InvoicePaymentViewSet(OrganizationScopedMixin, viewsets.GenericViewSet):
    """Card payment of the organization's invoices (billing admins and owners)."""

    queryset = Invoice.objects.all()
    serializer_class = InvoicePaymentSerializer

    def get_queryset(self) -> Any:
        invoices = super().get_queryset()
        return invoices if self.request.user.is_staff else invoices.exclude(status=Invoice.Status.DRAFT)

    @extend_schema(request=None, responses=InvoicePaymentSerializer)
    @action(detail=True, methods=["post"])
    def pay(self, request: Request, pk: str | None = None, **kwargs: Any) -> Response:
        invoice = self.get_object()
        try:
            result = services.invoice_payment_intent_create(invoice_id=invoice.pk)
        except services.InvoiceNotPayable as exc:
            raise ApplicationError(str(exc), code="invoice_not_payable", status_code=status.HTTP_409_CONFLICT) from None
        except services.PaymentInProgress as exc:
            raise ApplicationError(str(exc), code="payment_in_progress", status_code=status.HTTP_409_CONFLICT) from None
        except PaymentConfigurationError as exc:
            logger.error("invoice %s: card payment unavailable: %s", invoice.pk, exc.message)
            raise ApplicationError(
                "Card payments are not available right now; we have been notified. Pay by bank transfer instead.",
                code="payments_unavailable", status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            ) from None  # fmt: skip
        except PaymentTemporaryFailure as exc:
            raise ApplicationError(
                exc.message, code="payment_provider_unavailable", status_code=status.HTTP_503_SERVICE_UNAVAILABLE
            ) from None
        except PaymentError as exc:
            raise ApplicationError(exc.message, code=exc.code, status_code=status.HTTP_402_PAYMENT_REQUIRED) from None
        audit_record(
            action="invoice.pay", organization=invoice.organization, obj=invoice, **actor_for_request(request),
            after={"payment": result.payment.pk, "payment_intent": result.payment_intent,
                   "amount": str(result.amount), "currency": result.currency},
        )  # fmt: skip
        return Response(self.get_serializer(result).data)

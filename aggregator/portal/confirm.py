"""Portal: confirming an off-session charge the bank wants the customer to authenticate.

When an automatic top-up or a dunning retry of an invoice needs 3-D Secure, the customer is emailed
``STRIPE_CONFIRM_URL`` (``/payments/confirm/<payment_intent>/``, ``portal:payment-confirm``). The
page finds the charge among the organization's own (a ``Payment`` by its PaymentIntent, or the
top-up attempt that made it; anything else is a 404), says what it is for and how much, and a
billing admin or owner confirms it with Stripe.js ``confirmCardPayment``: the client secret comes
from ``payment-confirm-intent`` (a POST, so viewers get a 403) and is never rendered into the page
or logged. As on the pay page, only Stripe's signed ``payment_intent.succeeded`` event credits the
top-up or pays the invoice; the page polls ``payment-confirm-status`` until it has.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache

from aggregator.money import quantize
from aggregator.portal.access import PortalView
from aggregator.portal.invoices import browser_messages, json_error
from aggregator.tenancy.context import actor_for_request
from aggregator.tenancy.models import Organization
from aggregator.tenancy.scoping import OrganizationScopedMixin, scoped
from aggregator.tenancy.services import audit_record
from billing.invoicing.models import Invoice
from billing.payments import services
from billing.payments.gateways import gateway_for
from billing.payments.gateways.base import PaymentConfigurationError, PaymentError, PaymentTemporaryFailure
from billing.payments.gateways.stripe import StripeGateway, js_url, publishable_key
from billing.payments.records import Payment
from billing.topups.models import TopUp, TopUpAttempt

logger = logging.getLogger(__name__)

NEEDS_AUTHENTICATION = "authentication_required"
SETTLED_PAYMENT_STATUSES = (Payment.Status.SUCCEEDED, Payment.Status.REFUNDED, Payment.Status.DISPUTED)


@dataclass(frozen=True)
class Confirmation:
    """An off-session charge of the organization, as the confirmation page shows it.

    ``state``: ``open`` (waiting for the customer), ``processing`` (the bank is confirming it),
    ``succeeded``, ``failed`` (``message`` says why) or ``closed`` (it can no longer be confirmed:
    expired, canceled, or the invoice was paid another way; ``message`` says which)."""

    reference: str
    gateway: str
    amount: Decimal
    currency: str
    state: str
    message: str = ""
    top_up: TopUp | None = None
    invoice: Invoice | None = None
    payment: Payment | None = None
    payment_method: str = ""  # the saved method the charge used, for Stripe.js to confirm with

    @property
    def purpose(self) -> str:
        if self.invoice is not None:
            return _("Invoice %(number)s") % {"number": self.invoice.number or self.invoice.pk}
        assert self.top_up is not None
        if self.top_up.vendor_account is not None:
            return _("Automatic top-up of %(account)s") % {"account": self.top_up.vendor_account.label}
        return _("Automatic top-up of your prepaid wallet")


def payment_confirmation_get(*, organization: Organization, reference: str) -> Confirmation:
    """The organization's off-session charge ``reference`` (a PaymentIntent id), or ``Http404``."""
    payment = (
        scoped(Payment, organization)
        .select_related("invoice", "top_up__vendor_account", "dunning_step__payment_method")
        .filter(gateway_reference=reference)
        .first()
    )
    if payment is not None and payment.invoice is not None:
        return _invoice_confirmation(payment, payment.invoice)
    attempt = (
        scoped(TopUpAttempt, organization)
        .select_related("top_up__vendor_account")
        .filter(gateway_reference=reference)
        .order_by("-number")
        .first()
    )
    if attempt is not None:
        return _top_up_confirmation(attempt.top_up, attempt, payment)
    if payment is not None and payment.top_up is not None:
        return _top_up_confirmation(payment.top_up, None, payment)
    raise Http404(_("There is no payment to confirm at this address for your organization."))


def _invoice_confirmation(payment: Payment, invoice: Invoice) -> Confirmation:
    state, message = "open", ""
    if payment.status in SETTLED_PAYMENT_STATUSES:
        state = "succeeded"
    elif payment.status == Payment.Status.PROCESSING:
        state = "processing"
    elif invoice.status == Invoice.Status.PAID:
        state, message = "closed", _("This invoice is already paid: there is nothing to confirm.")
    elif invoice.status not in services.PAYABLE_STATUSES:
        state, message = "closed", _("This invoice has nothing left to pay.")
    elif payment.status == Payment.Status.FAILED and payment.failure_code != NEEDS_AUTHENTICATION:
        state, message = "failed", _(payment.failure_message) if payment.failure_message else ""
    step = getattr(payment, "dunning_step", None)
    method = step.payment_method.gateway_reference if step is not None and step.payment_method else ""
    return Confirmation(
        reference=payment.gateway_reference, gateway=payment.gateway, currency=payment.currency, state=state,
        amount=quantize(payment.amount, payment.currency, rounding="ROUND_HALF_UP"), message=message,
        invoice=invoice, payment=payment, payment_method=method,
    )  # fmt: skip


def _top_up_confirmation(top_up: TopUp, attempt: TopUpAttempt | None, payment: Payment | None) -> Confirmation:
    reference = attempt.gateway_reference if attempt is not None else top_up.gateway_reference
    state, message = "closed", top_up.last_error or _("This payment can no longer be confirmed.")
    if (payment is not None and payment.status in SETTLED_PAYMENT_STATUSES) or (
        top_up.status == TopUp.Status.SUCCEEDED and top_up.gateway_reference == reference
    ):
        state, message = "succeeded", ""
    elif payment is not None and payment.status == Payment.Status.PROCESSING:
        state, message = "processing", ""
    elif top_up.status == TopUp.Status.ACTION_REQUIRED and top_up.gateway_reference == reference:
        state, message = "open", ""
    elif attempt is not None and attempt.outcome == TopUpAttempt.Outcome.DECLINED:
        state, message = "failed", attempt.message
    return Confirmation(
        reference=reference, gateway=(attempt.gateway if attempt else top_up.gateway), currency=top_up.currency,
        amount=quantize(top_up.amount, top_up.currency, rounding="ROUND_HALF_UP"), state=state, message=message,
        top_up=top_up, payment=payment, payment_method=attempt.payment_method_reference if attempt else "",
    )  # fmt: skip


def status_text(confirmation: Confirmation) -> str:
    """What the page says about the charge's state."""
    if confirmation.state == "succeeded":
        if confirmation.invoice is not None:
            return _("Paid. Thank you!")
        return _("Confirmed. Thank you! The top-up is credited.")
    if confirmation.state == "processing":
        return _("Processing: your payment is being confirmed. This page updates by itself.")
    return confirmation.message


class PaymentConfirmObjectView(OrganizationScopedMixin, PortalView):
    """A page or action about one of the organization's charges, by its PaymentIntent id (another
    organization's is a 404). A top-up's charge may have no ``Payment`` yet: the selector also
    looks at the organization's top-up attempts."""

    scoped_model = Payment
    lookup_field = "gateway_reference"

    def get_confirmation(self, reference: str) -> Confirmation:
        return payment_confirmation_get(organization=self.organization, reference=reference)


class PaymentConfirmView(PaymentConfirmObjectView):
    """The page the email links to: what the charge is for, its amount, and the confirm button."""

    def get(self, request: HttpRequest, reference: str) -> HttpResponse:
        confirmation = self.get_confirmation(reference)
        key = publishable_key()
        context = self.base_context(
            confirmation=confirmation, status_text=status_text(confirmation), publishable_key=key,
            stripe_js_url=js_url(), messages_json=browser_messages(),
            can_confirm=confirmation.state == "open" and bool(key),
            urls={"intent": reverse("portal:payment-confirm-intent", args=[reference]),
                  "status": reverse("portal:payment-confirm-status", args=[reference]),
                  "invoice_pay": (reverse("portal:invoice-pay", args=[confirmation.invoice.pk])
                                  if confirmation.invoice is not None else ""),
                  "credits": reverse("portal:credits")},
        )  # fmt: skip
        return render(request, "portal/payments/confirm.html", context)


@method_decorator(never_cache, name="dispatch")  # the answer holds the client secret: never stored
class PaymentConfirmIntentView(PaymentConfirmObjectView):
    """POST: the PaymentIntent's client secret, for ``confirmCardPayment`` in the browser. Only
    for billing admins and owners (the role check of ``PortalView``), and only while open."""

    def post(self, request: HttpRequest, reference: str) -> JsonResponse:
        confirmation = self.get_confirmation(reference)
        if confirmation.state != "open":
            return JsonResponse({"state": confirmation.state, "message": status_text(confirmation)}, status=409)
        try:
            gateway = gateway_for(confirmation.gateway)
            if not isinstance(gateway, StripeGateway):
                raise PaymentConfigurationError(f"The {confirmation.gateway} gateway has no 3-D Secure confirmation.")
            intent = gateway.payment_intent_retrieve(confirmation.reference)
        except PaymentTemporaryFailure as exc:
            return json_error(exc.code, _("The payment service could not be reached. Try again in a minute."), 503)
        except PaymentError as exc:
            logger.error("payment %s cannot be confirmed: %s", confirmation.reference, exc.message)
            return json_error(
                "payments_unavailable",
                _("Card payments are not available right now; we have been notified. Try again later."),
                503,
            )
        if intent.status in ("processing", "succeeded", "requires_capture"):
            return JsonResponse({"state": "processing", "message": status_text(confirmation)})
        if not intent.reusable:
            return json_error("payment_closed", _("This payment can no longer be confirmed."), 409)
        audit_record(
            action="payment.confirm", organization=self.organization, obj=confirmation.payment or confirmation.top_up,
            **actor_for_request(request), after={"payment_intent": intent.id, "channel": "portal"},
        )  # fmt: skip
        return JsonResponse({
            "state": "open", "payment_intent": intent.id, "status": intent.status,
            "client_secret": intent.client_secret, "payment_method": confirmation.payment_method,
        })  # fmt: skip


class PaymentConfirmStatusView(PaymentConfirmObjectView):
    """GET: the charge's state, polled by the page until the webhook settles it."""

    def get(self, request: HttpRequest, reference: str) -> JsonResponse:
        confirmation = self.get_confirmation(reference)
        return JsonResponse({"state": confirmation.state, "message": status_text(confirmation)})

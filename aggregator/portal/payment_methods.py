"""Portal: saved payment methods. Add a card with a Stripe SetupIntent (``confirmCardSetup`` in the
browser), choose the default and the fallback (charged by top-ups and dunning, in that order),
remove one (detached at the gateway). Members who may not change billing see the list only."""

from __future__ import annotations

import logging

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.translation import gettext as _

from aggregator.portal.access import PortalView
from aggregator.portal.invoices import browser_messages, json_error
from aggregator.tenancy.scoping import OrganizationScopedMixin, scoped
from billing.payments import methods
from billing.payments.gateways.base import (
    PaymentConfigurationError,
    PaymentDeclined,
    PaymentError,
    PaymentTemporaryFailure,
    decline_message,
)
from billing.payments.gateways.stripe import js_url, publishable_key
from billing.payments.models import PaymentMethod

logger = logging.getLogger(__name__)


def _failure(exc: PaymentError) -> tuple[str, str, int]:
    if isinstance(exc, PaymentDeclined):
        return exc.decline_code, _(decline_message(exc.decline_code)), 402
    if isinstance(exc, PaymentTemporaryFailure):
        return exc.code, _("The payment service could not be reached. Try again in a minute."), 503
    if isinstance(exc, PaymentConfigurationError):
        logger.error("payment methods: %s", exc.message)
        return "payments_unavailable", _("Saving cards is not available right now; we have been notified."), 503
    return exc.code, _(exc.message), 402


class PaymentMethodListView(PortalView):
    def get(self, request: HttpRequest) -> HttpResponse:
        saved = list(scoped(PaymentMethod, self.organization).order_by("-is_default", "-is_fallback", "-created_at"))
        key = publishable_key()
        context = self.base_context(
            methods=saved, can_add=bool(key), stripe={"js_url": js_url(), "publishable_key": key},
            messages_json=browser_messages(),
            urls={"setup": reverse("portal:payment-method-setup"),
                  "finish": reverse("portal:payment-method-setup-finish")},
        )  # fmt: skip
        return render(request, "portal/payment_methods/list.html", context)


class PaymentMethodSetupView(PortalView):
    """POST: a SetupIntent's client secret for ``confirmCardSetup``."""

    def post(self, request: HttpRequest) -> JsonResponse:
        try:
            start = methods.payment_method_setup_start(organization=self.organization)
        except PaymentError as exc:
            return json_error(*_failure(exc))
        return JsonResponse({"setup_intent": start.setup_intent, "client_secret": start.client_secret})


class PaymentMethodSetupFinishView(PortalView):
    """POST ``setup_intent=seti_…``: store the card the confirmed SetupIntent saved."""

    def post(self, request: HttpRequest) -> JsonResponse:
        try:
            method = methods.payment_method_setup_finish(
                organization=self.organization, setup_intent=request.POST.get("setup_intent", ""), actor=self.user
            )
        except methods.PaymentMethodSetupInvalid as exc:
            return json_error("setup_invalid", _(str(exc)), 400)
        except PaymentError as exc:
            return json_error(*_failure(exc))
        messages.success(request, _("%(label)s is saved.") % {"label": method.label})
        return JsonResponse({"payment_method": method.pk, "label": method.label, "is_default": method.is_default})


class PaymentMethodActionView(OrganizationScopedMixin, PortalView):
    """POST on one saved method: ``default``, ``fallback`` or ``remove``; back to the list."""

    queryset = PaymentMethod.objects.all()
    action = ""

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        method = get_object_or_404(self.get_queryset(), pk=pk)
        label = method.label
        try:
            if self.action == "default":
                methods.payment_method_make_default(payment_method=method, actor=self.user)
                messages.success(request, _("%(label)s is now the default payment method.") % {"label": label})
            elif self.action == "fallback":
                methods.payment_method_make_fallback(payment_method=method, actor=self.user)
                messages.success(request, _("%(label)s is now the fallback payment method.") % {"label": label})
            else:
                methods.payment_method_remove(payment_method=method, actor=self.user)
                messages.success(request, _("%(label)s is removed.") % {"label": label})
        except (methods.PaymentMethodSetupInvalid, methods.PaymentMethodInUse) as exc:
            messages.error(request, _(str(exc)))
        except PaymentError as exc:
            messages.error(request, _failure(exc)[1])
        return HttpResponseRedirect(reverse("portal:payment-methods"))

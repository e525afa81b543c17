"""Portal: paying an invoice with PayPal (Orders v2, the buyer approves at PayPal).

``POST /invoices/<id>/pay/paypal/`` makes (or resumes) the invoice's PayPal order and sends the
buyer to PayPal's approval page. PayPal sends them back to ``/invoices/<id>/pay/paypal/return/``
with ``token=<order id>``: we capture the order there and show the invoice. A funding source
PayPal declines at capture (``INSTRUMENT_DECLINED``) sends the buyer back to PayPal to choose
another. The services are in ``billing.payments.paypal_services``.
"""

from __future__ import annotations

import logging

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.utils.translation import get_language
from django.utils.translation import gettext as _

from aggregator.portal.access import can
from aggregator.portal.invoices import InvoiceObjectView
from aggregator.tenancy.context import actor_for_request
from aggregator.tenancy.services import audit_record
from billing.invoicing.models import Invoice
from billing.payments import paypal_services, services
from billing.payments.gateways.base import PaymentConfigurationError, PaymentError, PaymentTemporaryFailure
from billing.payments.gateways.paypal import DuplicateInvoiceId

logger = logging.getLogger(__name__)

# PayPal's page in the customer's language where it has one (payments.md §3.3 ``experience_context.locale``).
PAYPAL_LOCALES = {"en": "en-US", "ja": "ja-JP"}


def invoice_url(invoice_id: int) -> str:
    """The invoice's page (the dashboard while the invoice pages are not installed)."""
    try:
        return reverse("portal:invoice-detail", args=[invoice_id])
    except NoReverseMatch:
        return reverse("portal:dashboard")


def duplicate_invoice_message() -> str:
    return _(
        "PayPal already has a payment under this invoice number, so it refused a new one; nothing was "
        "charged. If you already paid this invoice with PayPal, we will match it. Otherwise try again: "
        "the next PayPal payment carries a new reference."
    )


class InvoicePayPalStartView(InvoiceObjectView):
    """POST: the PayPal order of the invoice; redirects to PayPal's approval page."""

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        invoice = self.get_invoice(pk)
        back = HttpResponseRedirect(invoice_url(invoice.pk))
        return_url = request.build_absolute_uri(reverse("portal:invoice-paypal-return", args=[invoice.pk]))
        try:
            checkout = paypal_services.invoice_paypal_order_start(
                invoice_id=invoice.pk, return_url=return_url, cancel_url=f"{return_url}?cancelled=1",
                locale=PAYPAL_LOCALES.get((get_language() or "en")[:2], ""),
            )  # fmt: skip
        except services.InvoiceNotPayable:
            messages.info(request, _("This invoice has nothing left to pay."))
            return back
        except services.PaymentInProgress:
            messages.info(request, _("A payment of this invoice is being confirmed: the invoice updates when it is."))
            return back
        except DuplicateInvoiceId:
            messages.error(request, duplicate_invoice_message())
            return back
        except PaymentConfigurationError as exc:
            logger.error("invoice %s: PayPal unavailable: %s", invoice.pk, exc.message)
            messages.error(request, _("PayPal is not available right now; we have been notified. Pay by card or "
                                      "bank transfer instead."))  # fmt: skip
            return back
        except PaymentTemporaryFailure:
            messages.error(request, _("PayPal could not be reached. Try again in a few minutes."))
            return back
        except PaymentError as exc:
            messages.error(request, _(exc.message))
            return back
        audit_record(
            action="invoice.pay", organization=invoice.organization, obj=invoice, **actor_for_request(request),
            after={"paypal_order": checkout.order_id, "channel": "portal", "gateway": "paypal"},
        )  # fmt: skip
        if not checkout.approve_url:
            messages.error(request, _("PayPal did not say where to approve the payment. Try again in a few minutes."))
            return back
        return HttpResponseRedirect(checkout.approve_url)


class InvoicePayPalReturnView(InvoiceObjectView):
    """GET: the buyer is back from PayPal; capture the approved order and show the invoice."""

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        invoice = self.get_invoice(pk)
        order_id = request.GET.get("token", "")
        if not can(self.membership, self.write_role):
            return render(request, "portal/access/forbidden.html",
                          {"message": _("Only owners and billing admins can pay invoices.")}, status=403)  # fmt: skip
        if request.GET.get("cancelled"):
            messages.info(request, _("You left PayPal without paying; nothing was charged."))
            return HttpResponseRedirect(invoice_url(invoice.pk))
        if not order_id:
            # Nothing to confirm (e.g. the page was bookmarked): say so instead of failing.
            return render(
                request, "portal/paypal_return.html", self.base_context(invoice=invoice, back=invoice_url(pk))
            )
        try:
            result = paypal_services.invoice_paypal_order_capture(invoice_id=invoice.pk, order_id=order_id)
        except paypal_services.PayPalOrderUnknown:
            messages.error(request, _("This PayPal payment is not one of this invoice's: start the payment again."))
            return HttpResponseRedirect(invoice_url(invoice.pk))
        except PaymentTemporaryFailure:
            return render(request, "portal/paypal_return.html",
                          self.base_context(invoice=invoice, back=invoice_url(pk), retry=True), status=503)  # fmt: skip
        except PaymentConfigurationError as exc:
            logger.error("invoice %s: PayPal capture failed: %s", invoice.pk, exc.message)
            messages.error(request, _("PayPal is not available right now; we have been notified. Your approval "
                                      "was not charged."))  # fmt: skip
            return HttpResponseRedirect(invoice_url(invoice.pk))
        return self._outcome(request, invoice, result)

    def _outcome(self, request: HttpRequest, invoice: Invoice, result: paypal_services.PayPalReturn) -> HttpResponse:
        if result.outcome == "approve_again" and result.approve_url:
            # No message here: it would show on our next page, after the payment went through.
            # PayPal's page tells the buyer to choose another way to pay.
            return HttpResponseRedirect(result.approve_url)
        if result.outcome == "paid":
            messages.success(request, _("Thank you: your PayPal payment was received."))
        elif result.outcome == "processing":
            messages.info(request, _("PayPal is reviewing the payment: the invoice updates when PayPal completes it."))
        elif result.payment.failure_code == paypal_services.DUPLICATE_INVOICE_ID:
            messages.error(request, duplicate_invoice_message())
        else:
            messages.error(request, _("PayPal did not complete the payment; nothing was charged. Try again, or pay "
                                      "by card or bank transfer."))  # fmt: skip
        return HttpResponseRedirect(invoice_url(invoice.pk))

"""Portal: the organization's invoices, their PDFs, and the pay page.

The pay page (``/invoices/<id>/pay/``, the address printed on every invoice and email) shows the
methods ``payment_methods_available`` offers. Card: Stripe.js from ``STRIPE_JS_URL`` mounts the
card Element; the browser tokenizes the card (``createToken``), ``invoice-pay-confirm`` confirms
the invoice's PaymentIntent with the token, and a card that needs 3-D Secure is finished with
``confirmCardPayment(client_secret)``. Google Pay: Stripe's Express Checkout Element, shown only
when Stripe.js has it and says Google Pay can pay in this browser; it confirms the PaymentIntent
from ``invoice-pay-intent``. PayPal: its own include. Card data never reaches our servers, the
secret key never reaches the page, and the invoice is marked paid only by Stripe's signed
``payment_intent.succeeded`` event: the page polls ``invoice-pay-status`` until then.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.translation import gettext as _

from aggregator.api.exceptions import error_body
from aggregator.money import quantize, to_minor
from aggregator.portal.access import PortalView
from aggregator.tenancy.context import actor_for_request
from aggregator.tenancy.scoping import OrganizationScopedMixin, scoped
from aggregator.tenancy.services import audit_record
from billing.invoicing.models import CreditNote, Invoice
from billing.payments import methods, services
from billing.payments.gateways.base import (
    DECLINE_MESSAGES,
    PaymentConfigurationError,
    PaymentDeclined,
    PaymentError,
    PaymentTemporaryFailure,
    decline_message,
)
from billing.payments.gateways.stripe import js_url, publishable_key
from billing.payments.records import Payment

logger = logging.getLogger(__name__)

PAGE_SIZE = 50
# Payments worth showing on an invoice: an attempt still waiting for the customer is not one.
SHOWN_PAYMENT_STATUSES = [s for s in Payment.Status.values if s != Payment.Status.REQUIRES_PAYMENT]
# Stripe.js errors that are not decline codes, in the customer's words.
BROWSER_MESSAGES = {
    "payment_intent_authentication_failure": (
        "Your bank did not confirm the payment (3-D Secure). Try again, or use another card."
    ),
    "setup_intent_authentication_failure": (
        "Your bank did not confirm the card (3-D Secure). Try again, or use another card."
    ),
    "network": "The payment service could not be reached. Check your connection and try again.",
    "unexpected": "The payment could not be completed. Try again later or use another payment method.",
}


def left_to_pay(invoice: Invoice) -> Decimal:
    """The balance still owed (after credit notes and net payments); nothing when overpaid."""
    return max(quantize(invoice.balance_due, invoice.currency, rounding="ROUND_HALF_UP"), Decimal(0))


def browser_messages() -> dict[str, str]:
    """Decline and Stripe.js error codes -> translated messages, for ``pay.js`` (``json_script``)."""
    codes = {**DECLINE_MESSAGES, **BROWSER_MESSAGES}
    return {code: _(message) for code, message in codes.items()} | {"generic": _(decline_message("generic"))}


def methods_available(*, organization: Any) -> dict[str, bool]:
    """Which of card, Google Pay and PayPal the organization may use now."""
    from billing.payments.availability import payment_methods_available

    available = payment_methods_available(organization=organization)
    return {key: bool(available.get(key)) for key in ("card", "google_pay", "paypal")}


def json_error(code: str, message: str, status: int) -> JsonResponse:
    return JsonResponse(error_body(code, message), status=status)


class InvoiceObjectView(OrganizationScopedMixin, PortalView):
    """A page about one of the organization's invoices (another organization's id is a 404)."""

    queryset = Invoice.objects.exclude(status=Invoice.Status.DRAFT).select_related("issuer")

    def get_invoice(self, pk: int) -> Invoice:
        return get_object_or_404(self.get_queryset(), pk=pk)


class InvoiceListView(PortalView):
    """Invoices, newest period first, and credit notes: a fixed number of queries per page."""

    def get(self, request: HttpRequest) -> HttpResponse:
        invoices: QuerySet[Invoice] = scoped(Invoice, self.organization).exclude(status=Invoice.Status.DRAFT)
        page = Paginator(invoices.order_by("-period_start", "-id"), PAGE_SIZE).get_page(request.GET.get("page"))
        rows = [{"invoice": invoice, "left": left_to_pay(invoice)} for invoice in page.object_list]
        notes = list(
            scoped(CreditNote, self.organization).select_related("invoice").order_by("-issue_date", "-id")[:PAGE_SIZE]
        )
        return render(request, "portal/invoices/list.html", self.base_context(page=page, rows=rows, credit_notes=notes))


class InvoiceDetailView(InvoiceObjectView):
    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        from billing.invoicing.delivery import invoice_document_context

        invoice = self.get_invoice(pk)
        document = invoice_document_context(invoice)
        payments = list(
            Payment.objects.filter(invoice=invoice, status__in=SHOWN_PAYMENT_STATUSES).order_by("created_at", "id")
        )
        left = left_to_pay(invoice)
        context = self.base_context(
            invoice=invoice, doc=document, payments=payments, credit_notes=list(invoice.credit_notes.all()),
            left=left, payable=left > 0 and invoice.status in services.PAYABLE_STATUSES,
        )  # fmt: skip
        return render(request, "portal/invoices/detail.html", context)


class InvoicePdfView(InvoiceObjectView):
    """The stored PDF, as issued (its SHA-256 is on the invoice)."""

    def get(self, request: HttpRequest, pk: int) -> FileResponse:
        invoice = self.get_invoice(pk)
        if not invoice.pdf:
            raise Http404(_("The PDF of this invoice is being prepared; try again in a minute."))
        return FileResponse(
            invoice.pdf.open("rb"), content_type="application/pdf", as_attachment=True,
            filename=f"{invoice.number or invoice.pk}.pdf",
        )  # fmt: skip


class InvoicePayView(InvoiceObjectView):
    """The pay page: what is left to pay, and the payment methods on offer."""

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        invoice = self.get_invoice(pk)
        left = left_to_pay(invoice)
        payable = left > 0 and invoice.status in services.PAYABLE_STATUSES
        available = methods_available(organization=self.organization)
        key = publishable_key()
        if not key:
            available["card"] = available["google_pay"] = False
        processing = Payment.objects.filter(invoice=invoice, status=Payment.Status.PROCESSING).exists()
        state = "paid" if invoice.status == Invoice.Status.PAID else "processing" if processing else "open"
        context = self.base_context(
            invoice=invoice, left=left, payable=payable and state == "open", state=state, available=available,
            stripe={"js_url": js_url(), "publishable_key": key,
                    "amount_minor": to_minor(left, invoice.currency, rounding="ROUND_HALF_UP") if left > 0 else 0,
                    "currency": invoice.currency.lower()},
            messages_json=browser_messages(),
            urls={"intent": reverse("portal:invoice-pay-intent", args=[invoice.pk]),
                  "confirm": reverse("portal:invoice-pay-confirm", args=[invoice.pk]),
                  "status": reverse("portal:invoice-pay-status", args=[invoice.pk]),
                  "return": request.build_absolute_uri(reverse("portal:invoice-pay", args=[invoice.pk]))},
        )  # fmt: skip
        return render(request, "portal/invoices/pay.html", context)


class _PayActionView(InvoiceObjectView):
    """A JSON action of the pay page; errors come back as ``{"error": {"code", "message"}}``."""

    def failure(self, invoice: Invoice, exc: Exception) -> JsonResponse:
        if isinstance(exc, services.InvoiceNotPayable):
            return json_error("invoice_not_payable", _("This invoice has nothing left to pay."), 409)
        if isinstance(exc, services.PaymentInProgress):
            return json_error(
                "payment_in_progress",
                _("A payment of this invoice is being confirmed: the invoice updates when the bank confirms it."),
                409,
            )
        if isinstance(exc, PaymentDeclined):
            return json_error(exc.decline_code, _(decline_message(exc.decline_code)), 402)
        if isinstance(exc, PaymentTemporaryFailure):
            return json_error(exc.code, _("The payment service could not be reached. Try again in a minute."), 503)
        if isinstance(exc, PaymentConfigurationError) and exc.code == "invalid_token":
            return json_error(
                "invalid_token", _("The card was not read correctly: reload the page and try again."), 400
            )
        if isinstance(exc, PaymentConfigurationError):
            logger.error("invoice %s: card payment unavailable: %s", invoice.pk, exc.message)
            return json_error(
                "payments_unavailable",
                _("Card payments are not available right now; we have been notified. Pay by bank transfer instead."),
                503,
            )
        assert isinstance(exc, PaymentError)
        return json_error(exc.code, _(exc.message), 402)

    def payable_invoice(self, pk: int) -> tuple[Invoice, JsonResponse | None]:
        """The invoice, and the answer to give at once when there is nothing to pay."""
        invoice = self.get_invoice(pk)
        if left_to_pay(invoice) <= 0 or invoice.status not in services.PAYABLE_STATUSES:
            return invoice, self.failure(invoice, services.InvoiceNotPayable())
        from billing.payments.availability import payment_methods_available

        if not payment_methods_available(organization=invoice.organization)["card"]:
            # The page hides the card form then; a hand-made request must not charge a card whose
            # payment could never be confirmed (no webhook secret).
            return invoice, self.failure(invoice, PaymentConfigurationError("Card payment settings are missing."))
        return invoice, None

    def audit(self, invoice: Invoice, payment_intent: str) -> None:
        audit_record(
            action="invoice.pay", organization=invoice.organization, obj=invoice, **actor_for_request(self.request),
            after={"payment_intent": payment_intent, "channel": "portal"},
        )  # fmt: skip


class InvoicePayIntentView(_PayActionView):
    """POST: the client secret of the invoice's open PaymentIntent, for the Express Checkout
    Element (Google Pay) to confirm. Never rendered into the page."""

    def post(self, request: HttpRequest, pk: int) -> JsonResponse:
        invoice, refused = self.payable_invoice(pk)
        if refused is not None:
            return refused
        try:
            intent = services.invoice_payment_intent_create(invoice_id=invoice.pk)
        except (services.InvoiceNotPayable, services.PaymentInProgress, PaymentError) as exc:
            return self.failure(invoice, exc)
        self.audit(invoice, intent.payment_intent)
        return JsonResponse({
            "payment_intent": intent.payment_intent, "client_secret": intent.client_secret,
            "amount": str(intent.amount), "currency": intent.currency,
            "amount_minor": to_minor(intent.amount, intent.currency, rounding="ROUND_HALF_UP"),
        })  # fmt: skip


class InvoicePayConfirmView(_PayActionView):
    """POST ``token=tok_…``: confirm the invoice's PaymentIntent with a card tokenized by Stripe.js."""

    def post(self, request: HttpRequest, pk: int) -> JsonResponse:
        invoice, refused = self.payable_invoice(pk)
        if refused is not None:
            return refused
        try:
            result = methods.invoice_payment_confirm(invoice_id=invoice.pk, token=request.POST.get("token", ""))
        except (services.InvoiceNotPayable, services.PaymentInProgress, PaymentError) as exc:
            return self.failure(invoice, exc)
        self.audit(invoice, result.payment_intent)
        body: dict[str, Any] = {"status": result.status, "payment_intent": result.payment_intent}
        if result.status == "requires_action":
            body["client_secret"] = result.client_secret  # for confirmCardPayment's 3-D Secure
        return JsonResponse(body)


class InvoicePayStatusView(InvoiceObjectView):
    """GET: the invoice's payment state, polled by the pay page until the webhook marks it paid."""

    def get(self, request: HttpRequest, pk: int) -> JsonResponse:
        invoice = self.get_invoice(pk)
        payments = Payment.objects.filter(invoice=invoice)
        wanted = request.GET.get("payment_intent", "")
        if wanted:  # the attempt this page just confirmed, whatever its state
            latest = payments.filter(gateway_reference=wanted).first()
        else:
            latest = payments.filter(status__in=SHOWN_PAYMENT_STATUSES).order_by("-created_at", "-id").first()
        state = "open"
        if invoice.status == Invoice.Status.PAID:
            state = "paid"
        elif latest is not None and latest.status == Payment.Status.PROCESSING:
            state = "processing"
        return JsonResponse({
            "state": state, "invoice_status": invoice.status, "left": str(left_to_pay(invoice)),
            "currency": invoice.currency,
            "payment": None if latest is None else {
                "status": latest.status,
                "amount": str(quantize(latest.amount, latest.currency, rounding="ROUND_HALF_UP")),
                "message": _(latest.failure_message) if latest.status == Payment.Status.FAILED else "",
            },
        })  # fmt: skip

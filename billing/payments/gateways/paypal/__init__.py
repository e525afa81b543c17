"""The PayPal gateway (slug ``paypal``): Orders v2 approved by the buyer at PayPal, captured on
their return, refunds, and webhooks verified against PayPal's signing certificate.

It speaks to ``settings.PAYPAL_API_BASE`` through the official ``paypal-server-sdk``, whose
environments are fixed to PayPal's two hosts: ``_Configuration`` takes the address from the setting
instead, so tests and the offline demo point it at the local sandbox
(``billing.payments.sandbox.paypal``). No SDK exception or PayPal JSON leaves this module.

PayPal cannot charge a buyer who is not present (vaulting is US-only in the SDK), so ``charge`` and
``save_payment_method`` refuse with an explanation: PayPal pays invoices on-session only.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlparse

import requests
from apimatic_core.exceptions.auth_validation_exception import AuthValidationException
from django.conf import settings
from paypalserversdk.configuration import Configuration, Environment, Server
from paypalserversdk.exceptions.api_exception import ApiException
from paypalserversdk.exceptions.error_exception import ErrorException
from paypalserversdk.http.auth.o_auth_2 import ClientCredentialsAuthCredentials
from paypalserversdk.models.amount_with_breakdown import AmountWithBreakdown
from paypalserversdk.models.checkout_payment_intent import CheckoutPaymentIntent
from paypalserversdk.models.money import Money
from paypalserversdk.models.order_request import OrderRequest
from paypalserversdk.models.payment_source import PaymentSource
from paypalserversdk.models.paypal_wallet import PaypalWallet
from paypalserversdk.models.paypal_wallet_experience_context import PaypalWalletExperienceContext
from paypalserversdk.models.purchase_unit_request import PurchaseUnitRequest
from paypalserversdk.models.refund_request import RefundRequest as SdkRefundRequest
from paypalserversdk.paypal_serversdk_client import PaypalServersdkClient

from aggregator.money import CurrencyError, currency_code, quantize
from billing.payments.gateways.base import (
    ChargeRequest,
    ChargeResult,
    PaymentConfigurationError,
    PaymentDeclined,
    PaymentError,
    PaymentNeedsAction,
    PaymentTemporaryFailure,
    RefundRequest,
    RefundResult,
    SetupRequest,
    SetupResult,
    WebhookEvent,
    WebhookInvalid,
)
from billing.payments.gateways.paypal.signature import SignatureVerifier

DEFAULT_API_BASE = "https://api-m.paypal.com"
APPROVAL_RELS = ("payer-action", "approve", "redirect")


def setting(name: str, default: Any = "") -> Any:
    """A PayPal setting, with a default until the settings module defines it."""
    return getattr(settings, name, default)


class _Configuration(Configuration):
    """The SDK's configuration with the API address from ``PAYPAL_API_BASE``."""

    def __init__(self, *, api_base: str, **kwargs: Any) -> None:
        self._api_base = api_base
        super().__init__(**kwargs)

    def get_base_uri(self, server: Server = Server.DEFAULT) -> str:
        return self._api_base


@dataclass(frozen=True)
class Capture:
    id: str
    status: str  # COMPLETED, PENDING, DECLINED, FAILED, REFUNDED, PARTIALLY_REFUNDED
    amount: Decimal
    currency: str


@dataclass(frozen=True)
class Order:
    """An Orders v2 order as far as we use it."""

    id: str
    status: str  # CREATED, SAVED, APPROVED, VOIDED, COMPLETED, PAYER_ACTION_REQUIRED
    approve_url: str  # where the buyer approves it ("" once it needs no approval)
    invoice_id: str
    custom_id: str
    amount: Decimal | None = None  # of the purchase unit
    currency: str = ""
    captures: tuple[Capture, ...] = ()

    @property
    def capture(self) -> Capture | None:
        """The capture that moved (or is moving) money, if any."""
        for capture in self.captures:
            if capture.status in ("COMPLETED", "PENDING", "REFUNDED", "PARTIALLY_REFUNDED"):
                return capture
        return self.captures[0] if self.captures else None


class InstrumentDeclined(PaymentDeclined):
    """The funding source the buyer chose was declined at capture: send them back to PayPal
    (``approve_url``) to choose another; the order stays the same."""

    def __init__(self, approve_url: str) -> None:
        self.approve_url = approve_url
        super().__init__(
            "instrument_declined",
            "PayPal declined the payment method you chose. Choose another one at PayPal to finish paying.",
        )


class DuplicateInvoiceId(PaymentError):
    """PayPal already has a payment with this ``invoice_id`` (``DUPLICATE_INVOICE_ID``)."""

    default_code = "duplicate_invoice_id"

    def __init__(self, invoice_id: str) -> None:
        self.invoice_id = invoice_id
        super().__init__(
            f"PayPal already has a payment for invoice {invoice_id or 'this invoice number'}, so it refused "
            "another one. Nothing was charged now: check the invoice, which shows every payment we received."
        )


class PayPalGateway:
    slug = "paypal"

    def __init__(self) -> None:
        self._clients: dict[tuple[str, str, str], PaypalServersdkClient] = {}
        self._signatures = SignatureVerifier()
        self._lock = threading.Lock()

    # --- configuration --------------------------------------------------------------------------

    @property
    def api_base(self) -> str:
        return str(setting("PAYPAL_API_BASE", DEFAULT_API_BASE) or DEFAULT_API_BASE).rstrip("/")

    def client(self) -> PaypalServersdkClient:
        """One SDK client per credentials and address; it keeps its OAuth token until near expiry."""
        client_id, secret = str(setting("PAYPAL_CLIENT_ID")), str(setting("PAYPAL_CLIENT_SECRET"))
        if not (client_id and secret):
            raise PaymentConfigurationError(
                "PAYPAL_CLIENT_ID and PAYPAL_CLIENT_SECRET are not set: copy them from the PayPal developer "
                "dashboard (Apps & Credentials).",
                code="paypal_not_configured",
            )
        key = (client_id, secret, self.api_base)
        with self._lock:
            if key not in self._clients:
                credentials = ClientCredentialsAuthCredentials(o_auth_client_id=client_id, o_auth_client_secret=secret)
                config = _Configuration(
                    api_base=self.api_base, environment=Environment.PRODUCTION,
                    timeout=int(setting("PAYPAL_TIMEOUT", 30)), client_credentials_auth_credentials=credentials,
                )  # fmt: skip
                self._clients[key] = PaypalServersdkClient(config=config)
            return self._clients[key]

    # --- the contract -------------------------------------------------------------------------

    def charge(self, request: ChargeRequest) -> ChargeResult:
        raise PaymentConfigurationError(
            "PayPal cannot charge a buyer who is not present: use a card for automatic top-ups.",
            code="paypal_off_session_unsupported",
        )

    def save_payment_method(self, request: SetupRequest) -> SetupResult:
        raise PaymentConfigurationError(
            "PayPal accounts cannot be saved for later charges here: pay each invoice with PayPal instead.",
            code="paypal_off_session_unsupported",
        )

    def refund(self, request: RefundRequest) -> RefundResult:
        """Refund (part of) a capture; ``charge_reference`` is the capture id, or the order's id (what
        ``Payment.gateway_reference`` holds), whose capture is refunded."""
        currency = self._currency(request.currency)
        capture_id = request.charge_reference
        try:
            capture = self.order_get(capture_id).capture
            capture_id = capture.id if capture is not None else capture_id
        except PaymentError:
            pass  # not an order: a capture id
        body = SdkRefundRequest(amount=Money(currency_code=currency, value=_value(request.amount, currency)))
        if request.reason:
            body.note_to_payer = request.reason[:255]
        with self._errors():
            response = self.client().payments.refund_captured_payment(
                {"capture_id": capture_id, "body": body, "paypal_request_id": request.idempotency_key,
                 "prefer": "return=representation"}
            )  # fmt: skip
        data = _json(response)
        amount = _amount(data.get("amount")) or request.amount
        status = str(data.get("status") or "")
        if status == "COMPLETED":
            return RefundResult("succeeded", str(data.get("id") or ""), amount, currency)
        if status == "PENDING":
            return RefundResult("pending", str(data.get("id") or ""), amount, currency)
        raise PaymentDeclined(
            "refund_failed", "The refund could not be made; the money stays with us. Refund the customer another way."
        )

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> WebhookEvent:
        """Verify PayPal's signature over the raw body (``signature.SignatureVerifier``) and parse the event."""
        webhook_id = str(setting("PAYPAL_WEBHOOK_ID"))
        if not webhook_id:
            raise PaymentConfigurationError(
                "PAYPAL_WEBHOOK_ID is not set: copy the webhook's ID from the PayPal developer dashboard "
                "(Apps & Credentials > your app > Webhooks).",
                code="paypal_not_configured",
            )
        self._signatures.verify(body, headers, webhook_id=webhook_id)
        try:
            event = json.loads(body)
            event_id, event_type = str(event["id"]), str(event["event_type"])
            resource = event.get("resource") or {}
        except (ValueError, KeyError, TypeError) as exc:
            raise WebhookInvalid(f"The webhook body is not a PayPal event: {exc}.") from None
        amount = _amount(resource.get("amount")) if isinstance(resource, dict) else None
        currency = str((resource.get("amount") or {}).get("currency_code") or "") if amount is not None else ""
        return WebhookEvent(
            id=event_id, type=event_type, gateway_reference=str(resource.get("id") or ""), amount=amount,
            currency=currency, payload=event,
        )  # fmt: skip

    # --- Orders v2 (invoices, paid on-session) ---------------------------------------------------

    def order_create(
        self, *, amount: Decimal, currency: str, request_id: str, invoice_id: str, custom_id: str,
        description: str, return_url: str, cancel_url: str, locale: str = "",
    ) -> Order:  # fmt: skip
        """An order for the buyer to approve at PayPal (``approve_url``). ``request_id`` goes in
        ``PayPal-Request-Id``: the same id returns the same order instead of a second one."""
        currency = self._currency(currency)
        context = PaypalWalletExperienceContext(
            brand_name=str(setting("PAYPAL_BRAND_NAME", "") or "")[:127] or None, return_url=return_url,
            cancel_url=cancel_url, user_action="PAY_NOW", shipping_preference="NO_SHIPPING",
            landing_page="NO_PREFERENCE", payment_method_preference="IMMEDIATE_PAYMENT_REQUIRED",
        )  # fmt: skip
        if context.brand_name is None:
            del context.brand_name
        if locale:
            context.locale = locale
        body = OrderRequest(
            intent=CheckoutPaymentIntent.CAPTURE,
            purchase_units=[PurchaseUnitRequest(
                amount=AmountWithBreakdown(currency_code=currency, value=_value(amount, currency)),
                reference_id=custom_id[:256], invoice_id=invoice_id[:127], custom_id=custom_id[:127],
                description=description[:127],
            )],
            payment_source=PaymentSource(paypal=PaypalWallet(experience_context=context)),
        )  # fmt: skip
        with self._errors():
            response = self.client().orders.create_order(
                {"body": body, "paypal_request_id": request_id[:108], "prefer": "return=representation"}
            )
        return _order(_json(response))

    def order_get(self, order_id: str) -> Order:
        with self._errors():
            return _order(_json(self.client().orders.get_order({"id": order_id})))

    def order_capture(self, order_id: str) -> Order:
        """Capture an approved order. An order captured before (``ORDER_ALREADY_CAPTURED``, e.g. a
        second click or a retry after a lost answer) is returned as it is: money moves once.

        No ``PayPal-Request-Id``: PayPal itself captures an order at most once, and a replayed id
        could answer a later capture (after the buyer chose another funding source) with the old
        decline."""
        try:
            with self._errors():
                response = self.client().orders.capture_order({"id": order_id, "prefer": "return=representation"})
        except _AlreadyCaptured:
            return self.order_get(order_id)
        return _order(_json(response))

    # --- internals ----------------------------------------------------------------------------

    @staticmethod
    def _currency(code: str) -> str:
        try:
            return currency_code(code)
        except CurrencyError as exc:
            raise PaymentConfigurationError(str(exc), code="invalid_currency") from None

    def _approve_url(self, order_id: str, links: Any) -> str:
        url = _link(links, APPROVAL_RELS)
        if url or not order_id:
            return url
        try:
            return self.order_get(order_id).approve_url
        except PaymentError:
            return ""

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Translate the SDK's exceptions into the contract's (and ``_AlreadyCaptured``)."""
        try:
            yield
        except ErrorException as exc:
            issues = [str(getattr(d, "issue", "") or "") for d in (exc.details or [])]
            code = exc.response_code
            if "ORDER_ALREADY_CAPTURED" in issues:
                raise _AlreadyCaptured() from None
            if "INSTRUMENT_DECLINED" in issues:
                order_id = _order_id_of(exc)
                raise InstrumentDeclined(self._approve_url(order_id, _error_links(exc))) from None
            if "DUPLICATE_INVOICE_ID" in issues:
                raise DuplicateInvoiceId("") from None
            if "ORDER_NOT_APPROVED" in issues:
                raise PaymentNeedsAction(
                    self._approve_url(_order_id_of(exc), None),
                    "The payment was not approved at PayPal yet: approve it there to finish paying.",
                ) from None
            if code in (401, 403):
                raise PaymentConfigurationError(
                    f"PayPal refused our credentials ({code} {exc.name}): check PAYPAL_CLIENT_ID and "
                    "PAYPAL_CLIENT_SECRET (live credentials for api-m.paypal.com, sandbox ones for the sandbox).",
                    code="paypal_not_configured",
                ) from None
            if code == 429 or code >= 500:
                raise PaymentTemporaryFailure(
                    f"PayPal could not take the request now ({code}). Try again in a few minutes.",
                    code="paypal_unavailable",
                ) from None
            if code == 422 and issues:
                raise PaymentDeclined(issues[0].lower(), _issue_message(issues[0])) from None
            raise PaymentConfigurationError(
                f"PayPal refused the request ({code} {exc.name}: {', '.join(issues) or exc.message}; "
                f"debug id {exc.debug_id}).",
                code="paypal_error",
            ) from None
        except AuthValidationException:
            raise PaymentConfigurationError(
                "PayPal gave no access token for PAYPAL_CLIENT_ID and PAYPAL_CLIENT_SECRET: check them, and that "
                "PAYPAL_API_BASE matches them (live or sandbox).",
                code="paypal_not_configured",
            ) from None
        except ApiException as exc:
            if exc.response_code == 429 or exc.response_code >= 500:
                raise PaymentTemporaryFailure(
                    f"PayPal could not take the request now ({exc.response_code}). Try again in a few minutes.",
                    code="paypal_unavailable",
                ) from None
            raise PaymentConfigurationError(
                f"PayPal refused the request ({exc.response_code}).", code="paypal_error"
            ) from None
        except requests.RequestException as exc:
            raise PaymentTemporaryFailure(
                f"PayPal could not be reached ({type(exc).__name__}). Try again in a few minutes.",
                code="paypal_unavailable",
            ) from None


class _AlreadyCaptured(Exception):
    """``ORDER_ALREADY_CAPTURED``: handled inside the gateway, never raised out of it."""


_ISSUE_MESSAGES = {
    "ORDER_NOT_APPROVED": "The payment was not approved at PayPal yet: approve it there to finish paying.",
    "CARD_EXPIRED": "The card you chose at PayPal has expired. Choose another payment method at PayPal.",
    "MAX_NUMBER_OF_PAYMENT_ATTEMPTS_EXCEEDED": "PayPal allows no more attempts for this payment: start a new one.",
    "PAYER_ACTION_REQUIRED": "PayPal needs you to finish the payment there first.",
    "ORDER_EXPIRED": "The PayPal payment expired before it was finished: start a new one.",
}


def _issue_message(issue: str) -> str:
    return _ISSUE_MESSAGES.get(issue, f"PayPal refused the payment ({issue}). Try again or use another payment method.")


def _json(response: Any) -> dict[str, Any]:
    """The response body as plain JSON (the SDK's models drop fields it does not know)."""
    try:
        data = json.loads(response.text or "{}")
    except ValueError:
        raise PaymentTemporaryFailure(
            "PayPal answered with something that is not JSON.", code="paypal_unavailable"
        ) from None
    return data if isinstance(data, dict) else {}


def _error_links(exc: ErrorException) -> list[dict[str, str]]:
    return [{"rel": str(link.rel), "href": str(link.href)} for link in (exc.links or [])]


def _order_id_of(exc: ErrorException) -> str:
    """The order an error is about, from the request's path (``/v2/checkout/orders/<id>/capture``)."""
    try:
        path = urlparse(str(exc.response.request.query_url)).path
    except AttributeError:
        return ""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 4 and parts[:3] == ["v2", "checkout", "orders"]:
        return parts[3]
    return ""


def _link(links: Any, rels: tuple[str, ...]) -> str:
    found = {str(link.get("rel")): str(link.get("href")) for link in links or [] if isinstance(link, Mapping)}
    return next((found[rel] for rel in rels if found.get(rel)), "")


def _value(amount: Decimal, currency: str) -> str:
    """PayPal's amount string: in the currency's unit, at its minor unit ("120.50", JPY "12345")."""
    return str(quantize(amount, currency, rounding="ROUND_HALF_UP"))


def _amount(money: Any) -> Decimal | None:
    if not isinstance(money, Mapping):
        return None
    try:
        return Decimal(str(money.get("value")))
    except (InvalidOperation, ValueError):
        return None


def _order(data: Mapping[str, Any]) -> Order:
    units = data.get("purchase_units") or [{}]
    unit = units[0] if isinstance(units[0], Mapping) else {}
    captures = []
    for capture in (unit.get("payments") or {}).get("captures") or []:
        money = capture.get("amount") or {}
        captures.append(Capture(
            id=str(capture.get("id") or ""), status=str(capture.get("status") or ""),
            amount=_amount(money) or Decimal(0), currency=str(money.get("currency_code") or ""),
        ))  # fmt: skip
    status = str(data.get("status") or "")
    return Order(
        id=str(data.get("id") or ""), status=status,
        approve_url="" if status in ("COMPLETED", "VOIDED") else _link(data.get("links"), APPROVAL_RELS),
        invoice_id=str(unit.get("invoice_id") or ""), custom_id=str(unit.get("custom_id") or ""),
        amount=_amount(unit.get("amount")), currency=str((unit.get("amount") or {}).get("currency_code") or ""),
        captures=tuple(captures),
    )  # fmt: skip

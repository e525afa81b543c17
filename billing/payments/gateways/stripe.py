"""The Stripe gateway (slug ``stripe``): PaymentIntents, SetupIntents, refunds and signed webhooks.

It speaks to ``settings.STRIPE_API_BASE`` through the official library (a ``StripeClient`` per key
and address), so tests and the offline demo point it at ``localstripe``. Outcomes are mapped to
the contract of ``base.py``; no Stripe exception leaves this module.

localstripe accepts fewer parameters than Stripe (payments.md §2.1): ``description`` is sent only
to Stripe's own API, and travels in the metadata everywhere. It also ignores idempotency keys,
which is why every money-moving caller keeps its own attempt row (``billing.payments.records``).

Besides the contract, invoices paid on-session need a PaymentIntent the browser confirms with
Stripe.js (``payment_intent_create`` / ``_retrieve`` / ``_update_amount`` / ``_cancel``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlparse

import stripe
from django.conf import settings
from django.urls import reverse
from stripe import SignatureVerificationError, WebhookSignature  # resolved once (stripe loads lazily)

from aggregator.money import CurrencyError, currency_code, from_minor, to_minor
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
    decline_message,
)

DEFAULT_API_BASE = "https://api.stripe.com"
DEFAULT_JS_URL = "https://js.stripe.com/v3/"
WEBHOOK_TOLERANCE = 300  # seconds; Stripe's default (stripe.Webhook.DEFAULT_TOLERANCE)
SIGNATURE_HEADER = "Stripe-Signature"
# Where a customer confirms an off-session payment that needs 3-D Secure (the pay page, not in
# this module): {site_url} and {payment_intent} are filled in.
DEFAULT_CONFIRM_URL = "{site_url}/payments/confirm/{payment_intent}/"


def setting(name: str, default: Any = "") -> Any:
    """A Stripe setting, with a default until the settings module defines it."""
    return getattr(settings, name, default)


def publishable_key() -> str:
    return str(setting("STRIPE_PUBLISHABLE_KEY"))


def js_url() -> str:
    return str(setting("STRIPE_JS_URL", DEFAULT_JS_URL))


@dataclass(frozen=True)
class Intent:
    """A PaymentIntent as far as we use it. ``amount`` is a Decimal in ``currency``."""

    id: str
    status: str  # requires_payment_method, requires_confirmation, requires_action, processing, succeeded, canceled
    client_secret: str
    amount: Decimal
    currency: str

    @property
    def reusable(self) -> bool:
        """The customer may still pay it (again)."""
        return self.status in ("requires_payment_method", "requires_confirmation", "requires_action")


def _plain(obj: Any) -> Any:
    """A StripeObject as plain dicts and lists."""
    return obj.to_dict() if hasattr(obj, "to_dict") else obj


class StripeGateway:
    slug = "stripe"

    def __init__(self) -> None:
        self._clients: dict[tuple[str, str], stripe.StripeClient] = {}
        self._lock = threading.Lock()

    # --- configuration --------------------------------------------------------------------------

    @property
    def api_base(self) -> str:
        return str(setting("STRIPE_API_BASE", DEFAULT_API_BASE) or DEFAULT_API_BASE).rstrip("/")

    @property
    def is_stripe(self) -> bool:
        """Stripe's own API (not a local stand-in that refuses some parameters)."""
        return (urlparse(self.api_base).hostname or "").endswith("stripe.com")

    def client(self) -> stripe.StripeClient:
        secret_key = str(setting("STRIPE_SECRET_KEY"))
        if not secret_key:
            raise PaymentConfigurationError(
                "STRIPE_SECRET_KEY is not set: set it to the account's secret key (sk_live_… or sk_test_…).",
                code="stripe_not_configured",
            )
        key = (secret_key, self.api_base)
        with self._lock:
            if key not in self._clients:
                self._clients[key] = stripe.StripeClient(
                    secret_key,
                    base_addresses={"api": self.api_base},
                    max_network_retries=int(setting("STRIPE_MAX_NETWORK_RETRIES", 2)),
                    http_client=stripe.RequestsClient(timeout=int(setting("STRIPE_TIMEOUT", 30))),
                )
            return self._clients[key]

    def _confirm_url(self, payment_intent: str) -> str:
        template = str(setting("STRIPE_CONFIRM_URL", DEFAULT_CONFIRM_URL))
        return template.format(site_url=str(setting("SITE_URL")).rstrip("/"), payment_intent=payment_intent)

    # --- the contract -------------------------------------------------------------------------

    def charge(self, request: ChargeRequest) -> ChargeResult:
        """Create and confirm a PaymentIntent against a saved payment method (off-session by default)."""
        currency = self._currency(request.currency)
        params: dict[str, Any] = {
            "amount": to_minor(request.amount, currency, rounding="ROUND_HALF_UP"),
            "currency": currency.lower(),
            "payment_method": request.payment_method,
            # Cards only (Google Pay arrives as a card): with automatic payment methods Stripe would
            # ask a return_url of server-side and off-session confirmations.
            "payment_method_types": ["card"],
            "confirm": True,
            "metadata": self._metadata(request.metadata, request.idempotency_key, request.description),
        }
        if request.customer_reference:
            params["customer"] = request.customer_reference
        if request.off_session:
            params["off_session"] = True
        if request.description and self.is_stripe:
            params["description"] = request.description
        with self._errors():
            intent = self.client().v1.payment_intents.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": request.idempotency_key},
            )
        status = intent.status
        amount = from_minor(int(intent.amount), currency)
        if status == "succeeded":
            return ChargeResult("succeeded", intent.id, amount, currency)
        if status in ("processing", "requires_capture"):
            return ChargeResult("processing", intent.id, amount, currency)
        if status == "requires_action":
            # Real Stripe answers an off-session charge needing 3-D Secure with a 402
            # authentication_required; localstripe leaves the PaymentIntent in requires_action.
            raise self._needs_action(_plain(intent))
        error = _plain(getattr(intent, "last_payment_error", None)) or {}
        raise self._declined(error.get("decline_code") or error.get("code") or "card_declined")

    def save_payment_method(self, request: SetupRequest) -> SetupResult:
        """Save a client-side token on the customer for off-session charges: a PaymentMethod
        (``pm_…`` from Stripe.js or a Google Pay sheet) through a SetupIntent, or a legacy card
        token (``tok_…``) as a card source."""
        if not request.customer_reference:
            raise PaymentConfigurationError(
                "Stripe keeps saved payment methods on a customer: create the customer first "
                "(billing.payments.services.stripe_customer_reference).",
                code="stripe_customer_missing",
            )
        client, key, customer = self.client(), request.idempotency_key, request.customer_reference
        if request.token.startswith("tok_"):
            with self._errors():
                source = client.v1.customers.payment_sources.create(
                    customer, params={"source": request.token}, options={"idempotency_key": f"{key}:source"}
                )
            data = _plain(source)
            return SetupResult(
                "succeeded", data["id"], kind="card", brand=str(data.get("brand") or "").lower(),
                last4=str(data.get("last4") or ""), exp_month=data.get("exp_month"), exp_year=data.get("exp_year"),
                wallet=_token_wallet(data.get("tokenization_method")), fingerprint=str(data.get("fingerprint") or ""),
            )  # fmt: skip
        if not request.token.startswith("pm_"):
            raise PaymentDeclined(
                "card_declined",
                "The card could not be saved: the token is not a Stripe payment method (pm_… or tok_…).",
            )
        with self._errors():
            method = client.v1.payment_methods.retrieve(request.token)
            if method.customer != customer:
                # Stripe checks the card when it is attached (a declined card fails here).
                method = client.v1.payment_methods.attach(
                    request.token, params={"customer": customer}, options={"idempotency_key": f"{key}:attach"}
                )
            setup_params: dict[str, Any] = {
                "customer": customer,
                "usage": "off_session",
                "payment_method_types": [method.type],
                "metadata": {"idempotency_key": key},
            }
            setup = client.v1.setup_intents.create(
                params=setup_params,  # type: ignore[arg-type]
                options={"idempotency_key": f"{key}:setup"},
            )
            setup = client.v1.setup_intents.confirm(
                setup.id, params={"payment_method": method.id}, options={"idempotency_key": f"{key}:confirm"}
            )
        data = _plain(method)
        card = data.get("card") or {}
        details: dict[str, Any] = {
            "kind": data.get("type") or "card",
            "brand": str(card.get("brand") or ""),
            "last4": str(card.get("last4") or (data.get("sepa_debit") or {}).get("last4") or ""),
            "exp_month": card.get("exp_month"),
            "exp_year": card.get("exp_year"),
            "wallet": _wallet(card),
            "fingerprint": str(card.get("fingerprint") or ""),
        }
        if setup.status == "succeeded":
            return SetupResult("succeeded", method.id, **details)
        if setup.status in ("requires_action", "requires_confirmation"):
            # Saving a card the bank wants to confirm happens on the payment methods page, whose
            # SetupIntent flow lets the bank ask the customer (confirmCardSetup).
            url = f"{str(setting('SITE_URL')).rstrip('/')}{reverse('portal:payment-methods')}"
            return SetupResult("requires_action", method.id, action_url=url, **details)
        error = _plain(getattr(setup, "last_setup_error", None)) or {}
        raise self._declined(error.get("decline_code") or error.get("code") or "card_declined")

    def refund(self, request: RefundRequest) -> RefundResult:
        """Refund (part of) a PaymentIntent (``pi_…``) or a charge (``ch_…``)."""
        currency = self._currency(request.currency)
        target = "payment_intent" if request.charge_reference.startswith("pi_") else "charge"
        params: dict[str, Any] = {
            target: request.charge_reference,
            "amount": to_minor(request.amount, currency, rounding="ROUND_HALF_UP"),
        }
        if request.reason:
            params["metadata"] = {"reason": request.reason[:500]}
        with self._errors():
            refund = self.client().v1.refunds.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": request.idempotency_key},
            )
        amount = from_minor(int(refund.amount), currency)
        if refund.status == "succeeded":
            return RefundResult("succeeded", refund.id, amount, currency)
        if refund.status in ("pending", "requires_action"):
            return RefundResult("pending", refund.id, amount, currency)
        raise PaymentDeclined(
            str(getattr(refund, "failure_reason", None) or "refund_failed"),
            "The refund could not be made; the money stays with us. Refund the customer another way.",
        )

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> WebhookEvent:
        """Verify ``Stripe-Signature`` over the raw body (HMAC-SHA256, 5-minute tolerance)."""
        signature = _header(headers, SIGNATURE_HEADER)
        secret = str(setting("STRIPE_WEBHOOK_SECRET"))
        if not secret:
            raise PaymentConfigurationError(
                "STRIPE_WEBHOOK_SECRET is not set: copy the endpoint's signing secret (whsec_…) from Stripe.",
                code="stripe_not_configured",
            )
        try:
            # The check alone: construct_event would also build a StripeObject we never use, the
            # larger part of a delivery's CPU time (bench/webhooks.py).
            WebhookSignature.verify_header(body, signature, secret, tolerance=WEBHOOK_TOLERANCE)
            text = body.decode()  # JSON is UTF-8 (RFC 8259); stored as sent, not serialized again
            event = json.loads(text)
            obj = event["data"]["object"]
            event_id, event_type = str(event["id"]), str(event["type"])
        except SignatureVerificationError as exc:
            raise WebhookInvalid(f"The Stripe-Signature header does not verify: {exc.user_message or exc}.") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise WebhookInvalid(f"The webhook body is not a Stripe event: {exc}.") from None
        amount, currency = None, ""
        if isinstance(obj, dict) and isinstance(obj.get("amount"), int) and obj.get("currency"):
            try:
                currency = currency_code(str(obj["currency"]))
                amount = from_minor(obj["amount"], currency)
            except CurrencyError:
                amount, currency = None, ""
        reference = str(obj.get("id", "")) if isinstance(obj, dict) else ""
        return WebhookEvent(
            id=event_id,
            type=event_type,
            gateway_reference=reference,
            amount=amount,
            currency=currency,
            payload=event,
            payload_json=text,
        )

    # --- PaymentIntents confirmed by the browser (invoices) -------------------------------------

    def payment_intent_create(
        self, *, amount: Decimal, currency: str, idempotency_key: str, metadata: Mapping[str, str],
        customer_reference: str = "", description: str = "",
    ) -> Intent:  # fmt: skip
        """A PaymentIntent for the customer to confirm on-session with Stripe.js (card data goes
        from the browser to Stripe, never through us). Moves no money by itself."""
        currency = self._currency(currency)
        params: dict[str, Any] = {
            "amount": to_minor(amount, currency, rounding="ROUND_HALF_UP"),
            "currency": currency.lower(),
            "payment_method_types": ["card"],  # the card Element and Google Pay (a card wallet)
            "metadata": self._metadata(metadata, idempotency_key, description),
        }
        if customer_reference:
            params["customer"] = customer_reference
        if description and self.is_stripe:
            params["description"] = description
        with self._errors():
            intent = self.client().v1.payment_intents.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": idempotency_key},
            )
        return self._intent(intent)

    def payment_intent_retrieve(self, reference: str) -> Intent:
        with self._errors():
            return self._intent(self.client().v1.payment_intents.retrieve(reference))

    def payment_intent_update_amount(self, reference: str, *, amount: Decimal, currency: str) -> Intent:
        currency = self._currency(currency)
        minor = to_minor(amount, currency, rounding="ROUND_HALF_UP")
        with self._errors():
            intent = self.client().v1.payment_intents.update(
                reference, params={"amount": minor}, options={"idempotency_key": f"{reference}:amount:{minor}"}
            )
        return self._intent(intent)

    def payment_intent_data(self, reference: str) -> dict[str, Any]:
        """The PaymentIntent ``pi_…`` as plain data, in the shape its events carry (its latest
        charge expanded, so what paid is known without another call)."""
        with self._errors():
            intent = self.client().v1.payment_intents.retrieve(reference, params={"expand": ["latest_charge"]})
        return dict(_plain(intent))

    def payment_intent_cancel(self, reference: str) -> None:
        with self._errors():
            self.client().v1.payment_intents.cancel(reference)

    def charge_details(self, reference: str) -> dict[str, Any]:
        """The charge ``ch_…`` as plain data (its ``payment_method_details`` tell card or wallet)."""
        with self._errors():
            return dict(_plain(self.client().v1.charges.retrieve(reference)))

    def customer_create(self, *, name: str, email: str, metadata: Mapping[str, str], idempotency_key: str) -> str:
        params: dict[str, Any] = {"name": name, "metadata": dict(metadata)}
        if email:
            params["email"] = email
        with self._errors():
            customer = self.client().v1.customers.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": idempotency_key},
            )
        return str(customer.id)

    def payment_intent_confirm_token(self, reference: str, *, token: str, customer_reference: str = "") -> Intent:
        """Confirm an invoice's PaymentIntent with a card token from Stripe.js ``createToken``
        (card data went from the browser to Stripe). Stripe makes a PaymentMethod of the token;
        localstripe cannot (payments.md §2.1, gap 5), so there the token becomes a card of the
        customer. A 3-D Secure card leaves it in ``requires_action`` for ``confirmCardPayment``."""
        client = self.client()
        with self._errors():
            if self.is_stripe:
                method = client.v1.payment_methods.create(params={"type": "card", "card": {"token": token}})
                intent = client.v1.payment_intents.confirm(
                    reference, params={"payment_method": method.id, "use_stripe_sdk": True}
                )
                return self._intent(intent)
            if not customer_reference:
                raise PaymentConfigurationError("localstripe keeps cards on a customer: pass customer_reference.")
            source = client.v1.customers.payment_sources.create(customer_reference, params={"source": token})
            client.v1.payment_intents.update(
                reference, params={"payment_method": str(source.id), "customer": customer_reference}
            )
            return self._intent(client.v1.payment_intents.confirm(reference))

    def setup_intent_create(self, *, customer_reference: str, metadata: Mapping[str, str], idempotency_key: str) -> Any:
        """A SetupIntent the browser confirms with ``stripe.confirmCardSetup`` to save a card for
        off-session charges. Returns ``(id, client_secret)``."""
        with self._errors():
            params: dict[str, Any] = {"customer": customer_reference, "usage": "off_session",
                                      "payment_method_types": ["card"], "metadata": dict(metadata)}  # fmt: skip
            setup = self.client().v1.setup_intents.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": idempotency_key},
            )
        return str(setup.id), str(setup.client_secret or "")

    def setup_intent_result(self, reference: str) -> tuple[SetupResult, str, dict[str, str]]:
        """The payment method a confirmed SetupIntent saved, its customer and the SetupIntent's
        metadata. Raises ``PaymentDeclined`` when it did not succeed."""
        client = self.client()
        with self._errors():
            setup = client.v1.setup_intents.retrieve(reference)
            data = _plain(setup)
            if data.get("status") != "succeeded" or not data.get("payment_method"):
                error = data.get("last_setup_error") or {}
                raise self._declined(str(error.get("decline_code") or error.get("code") or "card_declined"))
            customer = str(data.get("customer") or "")
            method_id = (
                data["payment_method"] if isinstance(data["payment_method"], str) else data["payment_method"]["id"]
            )
            method = client.v1.payment_methods.retrieve(method_id)
            if customer and method.customer != customer:
                # Stripe attaches on confirmation; localstripe does not.
                method = client.v1.payment_methods.attach(method_id, params={"customer": customer})
        plain = _plain(method)
        card = plain.get("card") or {}
        result = SetupResult(
            "succeeded", str(plain["id"]), kind=str(plain.get("type") or "card"), brand=str(card.get("brand") or ""),
            last4=str(card.get("last4") or ""), exp_month=_int(card.get("exp_month")),
            exp_year=_int(card.get("exp_year")), wallet=_wallet(card), fingerprint=str(card.get("fingerprint") or ""),
        )  # fmt: skip
        return result, customer, {str(k): str(v) for k, v in (data.get("metadata") or {}).items()}

    def payment_method_detach(self, reference: str, *, customer_reference: str = "") -> None:
        """Detach a saved payment method (``pm_…``), or delete a saved card (``card_…``) of the
        customer, at Stripe: it can no longer be charged."""
        with self._errors():
            if reference.startswith("pm_"):
                self.client().v1.payment_methods.detach(reference)
            elif reference.startswith(("card_", "src_")) and customer_reference:
                self.client().v1.customers.payment_sources.delete(customer_reference, reference)

    # --- internals ----------------------------------------------------------------------------

    @staticmethod
    def _currency(code: str) -> str:
        try:
            return currency_code(code)
        except CurrencyError as exc:
            raise PaymentConfigurationError(str(exc), code="invalid_currency") from None

    @staticmethod
    def _metadata(metadata: Mapping[str, str], idempotency_key: str, description: str) -> dict[str, str]:
        data = {str(k): str(v)[:500] for k, v in metadata.items()}
        data["idempotency_key"] = idempotency_key
        if description:
            data["description"] = description[:500]
        return data

    def _intent(self, intent: Any) -> Intent:
        currency = self._currency(str(intent.currency))
        return Intent(
            id=str(intent.id),
            status=str(intent.status),
            client_secret=str(intent.client_secret or ""),
            amount=from_minor(int(intent.amount), currency),
            currency=currency,
        )

    @staticmethod
    def _declined(code: str) -> PaymentError:
        if code == "processing_error":
            return PaymentTemporaryFailure(decline_message(code), code=code)
        return PaymentDeclined(code)

    def _needs_action(self, intent: Mapping[str, Any]) -> PaymentNeedsAction:
        reference = str(intent.get("id") or "")
        url = _redirect_url(intent.get("next_action")) or (self._confirm_url(reference) if reference else "")
        return PaymentNeedsAction(url, gateway_reference=reference)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Translate the library's exceptions into the contract's."""
        try:
            yield
        except stripe.CardError as exc:
            error = _plain(exc.error) or {}
            code = str(exc.code or error.get("code") or "card_declined")
            decline_code = str(error.get("decline_code") or "")
            if "authentication_required" in (code, decline_code):
                intent = _plain(error.get("payment_intent"))
                raise self._needs_action(intent if isinstance(intent, Mapping) else {"id": intent or ""}) from None
            raise self._declined(decline_code or code) from None
        except (stripe.APIConnectionError, stripe.RateLimitError) as exc:
            raise PaymentTemporaryFailure(
                f"Stripe could not be reached ({type(exc).__name__}). We will try again.", code="stripe_unavailable"
            ) from None
        except stripe.IdempotencyError as exc:
            raise PaymentConfigurationError(
                f"Stripe refused a reused idempotency key: {exc.user_message or exc}", code="idempotency_error"
            ) from None
        except (stripe.AuthenticationError, stripe.PermissionError) as exc:
            raise PaymentConfigurationError(
                f"Stripe refused our API key ({exc.user_message or exc}): check STRIPE_SECRET_KEY.",
                code="stripe_not_configured",
            ) from None
        except stripe.StripeError as exc:
            if (exc.http_status or 500) >= 500:
                raise PaymentTemporaryFailure(
                    "Stripe had an error on its side. We will try again.", code="stripe_unavailable"
                ) from None
            raise PaymentConfigurationError(
                f"Stripe refused the request ({exc.http_status}): {exc.user_message or exc}", code="stripe_error"
            ) from None


def _header(headers: Mapping[str, str], name: str) -> str:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return ""


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _wallet(card: Mapping[str, Any]) -> str:
    wallet = card.get("wallet") or {}
    return str(wallet.get("type") or "") if isinstance(wallet, Mapping) else ""


def _token_wallet(method: Any) -> str:
    """A card token's ``tokenization_method`` (android_pay is Google Pay's old name)."""
    return {"android_pay": "google_pay", "google_pay": "google_pay", "apple_pay": "apple_pay"}.get(str(method), "")


def _redirect_url(next_action: Any) -> str:
    if isinstance(next_action, Mapping):
        redirect = next_action.get("redirect_to_url") or {}
        if isinstance(redirect, Mapping) and redirect.get("url"):
            return str(redirect["url"])
    return ""

"""A deterministic test gateway (slug ``fake``), enabled by default only in DEBUG and tests.

Outcomes follow the payment-method reference, like Stripe's test ``pm_card_*`` ids:

==============================  ===================================================
``pm_decline_<code>``           declined with decline code ``<code>``, e.g.
                                ``pm_decline_insufficient_funds``
``pm_needs_action``             needs 3-D Secure: ``PaymentNeedsAction`` with a link
``pm_temporary``                ``PaymentTemporaryFailure`` (provider unavailable)
``pm_processing``               accepted, ``processing`` (confirmed later by webhook)
anything else (``pm_ok``)       succeeds
==============================  ===================================================

``script(...)`` queues outcomes that take precedence over the reference, one per new charge.
Like Stripe, a repeated idempotency key returns the first outcome without charging again, and
the same key with different parameters is refused. Every call is recorded in ``requests``; each
charge that moved money once is in ``charges``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections import deque
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from django.conf import settings

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

Outcome = str | PaymentError  # "succeeded", "processing", or the error to raise
SIGNATURE_HEADER = "Fake-Signature"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class FakeGateway:
    slug = "fake"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    # --- test controls ------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the script, the records and the idempotency keys."""
        with self._lock:
            self._script: deque[Outcome] = deque()
            self._by_key: dict[str, tuple[tuple[Any, ...], ChargeResult | PaymentError]] = {}
            self.requests: list[ChargeRequest] = []
            self.charges: list[ChargeResult] = []
            self.refunds: list[RefundResult] = []

    def script(self, *outcomes: Outcome) -> None:
        """Queue outcomes for the next new charges, ahead of the payment-method rules."""
        with self._lock:
            self._script.extend(outcomes)

    # --- the contract -------------------------------------------------------------------------

    def charge(self, request: ChargeRequest) -> ChargeResult:
        fingerprint = (request.amount, request.currency, request.payment_method, request.customer_reference)
        with self._lock:
            self.requests.append(request)
            if request.idempotency_key in self._by_key:
                first_fingerprint, first = self._by_key[request.idempotency_key]
                if first_fingerprint != fingerprint:
                    raise PaymentConfigurationError(
                        f"Idempotency key {request.idempotency_key} was used with other parameters: "
                        "each attempt needs its own key.",
                        code="idempotency_error",
                    )
            else:
                first = self._decide(request)
                self._by_key[request.idempotency_key] = (fingerprint, first)
                if isinstance(first, ChargeResult):
                    self.charges.append(first)
        if isinstance(first, PaymentError):
            raise first
        return first

    def save_payment_method(self, request: SetupRequest) -> SetupResult:
        """``tok_<x>`` becomes ``pm_<x>`` (so ``tok_decline_expired_card`` saves a card whose
        charges are declined, like Stripe's 4000000000000341); ``tok_google_pay`` is a Google Pay card."""
        if not request.token.startswith("tok_"):
            raise PaymentDeclined("card_declined", "The card could not be saved: the token is not valid.")
        reference = "pm_" + request.token.removeprefix("tok_")
        if reference.startswith("pm_needs_action"):
            return SetupResult("requires_action", reference, action_url=self._action_url(reference))
        return SetupResult(
            "succeeded", reference, kind="card", brand="visa", last4="4242", exp_month=12, exp_year=2030,
            wallet="google_pay" if reference == "pm_google_pay" else "",
        )  # fmt: skip

    def refund(self, request: RefundRequest) -> RefundResult:
        with self._lock:
            previous = next((r for r in self.refunds if r.gateway_reference == "re_fake_" +
                             _digest(request.idempotency_key)), None)  # fmt: skip
            if previous is not None:
                return previous
            result = RefundResult("succeeded", "re_fake_" + _digest(request.idempotency_key), request.amount,
                                  request.currency)  # fmt: skip
            self.refunds.append(result)
            return result

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> WebhookEvent:
        signature = {k.lower(): v for k, v in headers.items()}.get(SIGNATURE_HEADER.lower(), "")
        if not hmac.compare_digest(signature, self._sign(body)):
            raise WebhookInvalid("The Fake-Signature header does not match the body.")
        try:
            event = json.loads(body)
            data = event["data"]
            amount = data.get("amount")
            return WebhookEvent(
                id=str(event["id"]), type=str(event["type"]), gateway_reference=str(data["reference"]),
                amount=Decimal(amount) if amount is not None else None, currency=str(data.get("currency", "")),
                payload=event,
            )  # fmt: skip
        except (ValueError, KeyError, TypeError) as exc:
            raise WebhookInvalid(f"The webhook body is not a fake-gateway event: {exc}.") from None

    def webhook(self, *, event_id: str, event_type: str, reference: str, amount: Decimal | None = None,
                currency: str = "") -> tuple[bytes, dict[str, str]]:  # fmt: skip
        """A signed webhook delivery (body and headers), as the gateway would send it."""
        data: dict[str, Any] = {"reference": reference, "currency": currency}
        if amount is not None:
            data["amount"] = str(amount)
        body = json.dumps({"id": event_id, "type": event_type, "data": data}).encode()
        return body, {SIGNATURE_HEADER: self._sign(body)}

    # --- internals ----------------------------------------------------------------------------

    def _decide(self, request: ChargeRequest) -> ChargeResult | PaymentError:
        reference = "pi_fake_" + _digest(request.idempotency_key)
        outcome: Outcome = self._script.popleft() if self._script else self._outcome_for(request.payment_method)
        if isinstance(outcome, PaymentNeedsAction) and not outcome.gateway_reference:
            outcome = PaymentNeedsAction(outcome.action_url or self._action_url(reference), outcome.message,
                                         gateway_reference=reference)  # fmt: skip
        if isinstance(outcome, PaymentError):
            return outcome
        if outcome not in ("succeeded", "processing"):
            raise ValueError(f"Unknown scripted outcome {outcome!r}: use 'succeeded', 'processing' or a PaymentError.")
        return ChargeResult("succeeded" if outcome == "succeeded" else "processing", reference, request.amount,
                            request.currency)  # fmt: skip

    def _outcome_for(self, payment_method: str) -> Outcome:
        if payment_method.startswith("pm_decline_"):
            return PaymentDeclined(payment_method.removeprefix("pm_decline_"))
        if payment_method.startswith("pm_needs_action"):
            return PaymentNeedsAction("")
        if payment_method.startswith("pm_temporary"):
            return PaymentTemporaryFailure()
        if payment_method.startswith("pm_processing"):
            return "processing"
        return "succeeded"

    @staticmethod
    def _action_url(reference: str) -> str:
        return f"https://fake-gateway.invalid/authenticate/{reference}"

    @staticmethod
    def _sign(body: bytes) -> str:
        secret = getattr(settings, "FAKE_GATEWAY_WEBHOOK_SECRET", "whsec_fake")
        return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()

"""The payment-gateway contract: what every gateway offers, in frozen dataclasses.

A gateway speaks one payment provider's API (Stripe, PayPal, the test gateway) and maps its
outcomes to ours: a result for money that moved (or is moving), an exception from the small
taxonomy below for everything else. Nothing outside the gateway's module knows its SDK or JSON.

Every call that moves money carries an idempotency key built from our own rows
(``topup:<id>:attempt:<n>``): the gateway must return the first result for a key it has seen
instead of charging again (Stripe keeps keys for at least 24 hours).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, Protocol, runtime_checkable

ChargeStatus = Literal["succeeded", "processing"]
SetupStatus = Literal["succeeded", "requires_action"]
RefundStatus = Literal["succeeded", "pending"]


@dataclass(frozen=True)
class ChargeRequest:
    """Charge a saved payment method. ``amount`` is a Decimal in ``currency`` at its minor unit
    (the gateway converts to minor units); ``off_session`` when the customer is not present."""

    amount: Decimal
    currency: str
    payment_method: str  # the gateway's reference, e.g. "pm_…"
    customer_reference: str  # the gateway's customer, e.g. "cus_…" ("" when the gateway has none)
    idempotency_key: str
    description: str = ""
    off_session: bool = True
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class ChargeResult:
    """Money moved (``succeeded``) or is moving and will be confirmed by a webhook (``processing``)."""

    status: ChargeStatus
    gateway_reference: str  # e.g. the PaymentIntent "pi_…" or the PayPal capture id
    amount: Decimal
    currency: str


@dataclass(frozen=True)
class SetupRequest:
    """Save a payment method for later off-session charges from a client-side token (card data
    never reaches our servers: Stripe Elements or Google Pay tokenize it in the browser)."""

    token: str
    customer_reference: str
    idempotency_key: str


@dataclass(frozen=True)
class SetupResult:
    """A saved payment method: its reference and the display details we may keep."""

    status: SetupStatus
    gateway_reference: str
    kind: str = "card"  # card, paypal, sepa_debit
    brand: str = ""
    last4: str = ""
    exp_month: int | None = None
    exp_year: int | None = None
    wallet: str = ""  # "google_pay", "apple_pay" or ""
    action_url: str = ""  # set when status is requires_action
    fingerprint: str = ""  # the gateway's id of the card itself: the same card saved twice has the same one

    def stored_fields(self) -> dict[str, Any]:
        """What ``PaymentMethod`` keeps of it (display details and the card's fingerprint)."""
        return {"kind": self.kind, "brand": self.brand, "last4": self.last4, "exp_month": self.exp_month,
                "exp_year": self.exp_year, "wallet": self.wallet, "fingerprint": self.fingerprint}  # fmt: skip


@dataclass(frozen=True)
class RefundRequest:
    charge_reference: str
    amount: Decimal
    currency: str
    idempotency_key: str
    reason: str = ""


@dataclass(frozen=True)
class RefundResult:
    status: RefundStatus
    gateway_reference: str
    amount: Decimal
    currency: str


@dataclass(frozen=True)
class WebhookEvent:
    """A verified event from the gateway, de-duplicated by ``id`` where it is stored."""

    id: str
    type: str  # the gateway's event type, e.g. "payment_intent.succeeded"
    gateway_reference: str  # the object the event is about (charge, refund, payment method)
    amount: Decimal | None
    currency: str
    payload: Mapping[str, Any] = field(default_factory=dict, hash=False)
    # ``payload`` as the JSON text the gateway sent, when it is the whole body: stored as is.
    payload_json: str = field(default="", hash=False, repr=False)


@runtime_checkable
class Gateway(Protocol):
    """What every payment gateway offers. Implementations raise the exceptions below, never the
    provider SDK's."""

    slug: str

    def charge(self, request: ChargeRequest) -> ChargeResult: ...

    def save_payment_method(self, request: SetupRequest) -> SetupResult: ...

    def refund(self, request: RefundRequest) -> RefundResult: ...

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> WebhookEvent:
        """Verify the signature over the raw ``body`` and return the event; raise
        ``WebhookInvalid`` when it does not verify."""
        ...


# --- Outcomes other than success --------------------------------------------------------------

# Customer-facing explanations of decline codes (Stripe's codes, which other gateways map to).
# Lost, stolen and fraud declines read as a generic decline: the reason is the issuer's to tell,
# and the people who get our emails are not always the cardholder.
_GENERIC_DECLINE = "Your bank declined the payment. Contact your bank or use another payment method."
DECLINE_MESSAGES: Mapping[str, str] = {
    "insufficient_funds": "The card has insufficient funds. Add funds, raise the card's limit, or use another card.",
    "card_declined": _GENERIC_DECLINE,
    "generic_decline": _GENERIC_DECLINE,
    "do_not_honor": "Your bank declined the payment without giving a reason. Contact your bank or use another card.",
    "expired_card": "The card has expired. Add a new card in the portal.",
    "incorrect_cvc": "The card's security code (CVC) was not accepted. Add the card again with the right code.",
    "incorrect_number": "The card number is no longer valid. Add a new card in the portal.",
    "processing_error": "The card could not be processed because of an error at the bank. We will try again.",
    "authentication_required": (
        "Your bank asks you to confirm this payment (3-D Secure). Open the link in this email to confirm it."
    ),
    "lost_card": _GENERIC_DECLINE,
    "stolen_card": _GENERIC_DECLINE,
    "pickup_card": _GENERIC_DECLINE,
    "fraudulent": _GENERIC_DECLINE,
    "card_velocity_exceeded": "The card has reached its spending limit for now. Use another card or try again later.",
    "try_again_later": "Your bank could not approve the payment just now. We will try again; nothing was charged.",
    "card_not_supported": "This card does not support this kind of payment. Use another card.",
    "currency_not_supported": "This card cannot pay in the invoice's currency. Use another card.",
    "transaction_not_allowed": (
        "Your bank does not allow this payment on this card. Contact your bank or use another card."
    ),
    "invalid_expiry_month": "The card's expiry month is not valid. Add the card again.",
    "invalid_expiry_year": "The card's expiry year is not valid. Add the card again.",
    "invalid_cvc": "The card's security code (CVC) is not valid. Add the card again with the right code.",
    "withdrawal_count_limit_exceeded": "The card has reached its limit of payments for now. Use another card.",
    "approve_with_id": "Your bank could not approve the payment just now. We will try again; nothing was charged.",
    "issuer_not_available": "Your bank could not be reached. We will try again; nothing was charged.",
}

# Declines that retrying the same payment method cannot fix: move to another method at once.
# (payments.md §5.2; a saved card's CVC cannot change either, so incorrect_cvc joins them.)
HARD_DECLINE_CODES: frozenset[str] = frozenset(
    {"lost_card", "stolen_card", "fraudulent", "pickup_card", "invalid_account", "incorrect_number",
     "expired_card", "incorrect_cvc", "invalid_cvc", "invalid_expiry_month", "invalid_expiry_year",
     "card_not_supported", "currency_not_supported", "transaction_not_allowed"}
)  # fmt: skip


def decline_message(code: str) -> str:
    """The plain-words explanation of a decline code (a generic one for codes we do not know)."""
    return DECLINE_MESSAGES.get(code, _GENERIC_DECLINE)


class PaymentError(Exception):
    """A payment did not succeed. ``code`` is for machines, ``message`` for the customer."""

    default_code = "payment_error"
    default_message = "The payment could not be completed. Try again later or use another payment method."

    def __init__(self, message: str | None = None, *, code: str | None = None) -> None:
        self.code = code or self.default_code
        self.message = message or self.default_message
        super().__init__(self.message)


class PaymentDeclined(PaymentError):
    """The issuer or provider refused the payment; ``decline_code`` says why."""

    default_code = "card_declined"

    def __init__(self, decline_code: str = "generic_decline", message: str | None = None) -> None:
        self.decline_code = decline_code
        super().__init__(message or decline_message(decline_code), code="card_declined")

    @property
    def is_hard(self) -> bool:
        """Retrying the same payment method will not help."""
        return self.decline_code in HARD_DECLINE_CODES


class PaymentNeedsAction(PaymentError):
    """The customer must act on-session (e.g. 3-D Secure on an off-session charge) at ``action_url``."""

    default_code = "authentication_required"

    def __init__(self, action_url: str, message: str | None = None, *, gateway_reference: str = "") -> None:
        self.action_url = action_url
        self.gateway_reference = gateway_reference
        super().__init__(message or decline_message("authentication_required"))


class PaymentTemporaryFailure(PaymentError):
    """A transient failure (provider outage, network, ``processing_error``): try again later."""

    default_code = "temporary_failure"
    default_message = "The payment provider could not be reached. We will try again."


class PaymentConfigurationError(PaymentError):
    """Our side is misconfigured (unknown gateway, missing keys, idempotency key reused with other
    parameters). Not the customer's doing: operators must fix it."""

    default_code = "configuration_error"
    default_message = "Payments are not configured correctly on our side. We have been notified."


class WebhookInvalid(PaymentError):
    """A webhook whose signature or body does not verify: answer 400 and store nothing."""

    default_code = "webhook_invalid"
    default_message = "The webhook signature does not verify."

"""Saved payment methods managed by the customer, and paying an invoice with a new card.

Saving a card (portal "Payment methods"): ``payment_method_setup_start`` makes a Stripe
SetupIntent on the organization's Stripe customer; the browser confirms it with Stripe.js
``confirmCardSetup`` (card data and 3-D Secure stay between the browser and Stripe); then
``payment_method_setup_finish`` reads the SetupIntent back from Stripe and stores what the
customer needs to recognise the card. The SetupIntent carries the organization's id in its
metadata, so one organization cannot store another's card.

The organization's *default* method is charged first by automatic payments (top-ups, dunning);
its *fallback* is charged when the default is declined. A method is one or the other, not both.

Paying an invoice with a new card (portal pay page): the browser tokenizes the card with Stripe.js
``createToken`` and ``invoice_payment_confirm`` confirms the invoice's PaymentIntent with it; a
card that needs 3-D Secure comes back ``requires_action`` and the browser finishes it with
``confirmCardPayment``. The invoice is marked paid only by the signed ``payment_intent.succeeded``
event.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from django.db import transaction

from aggregator.tenancy.models import ApiKey, Organization, User
from aggregator.tenancy.services import audit_record
from billing.payments import services
from billing.payments.gateways import gateway_for
from billing.payments.gateways.base import PaymentConfigurationError, PaymentError, PaymentTemporaryFailure
from billing.payments.gateways.stripe import js_url, publishable_key
from billing.payments.models import PaymentMethod
from billing.payments.records import Payment
from billing.topups.services import PaymentMethodInUse, payment_method_delete, payment_method_set_default

logger = logging.getLogger(__name__)

__all__ = [
    "InvoicePaymentConfirmation",
    "PaymentMethodInUse",
    "PaymentMethodSetupInvalid",
    "SetupStart",
    "invoice_payment_confirm",
    "payment_method_make_default",
    "payment_method_make_fallback",
    "payment_method_remove",
    "payment_method_setup_finish",
    "payment_method_setup_start",
]


class PaymentMethodSetupInvalid(ValueError):
    """The SetupIntent is not one this organization started; the message says what to do."""


# --- Paying an invoice with a new card ------------------------------------------------------------


@dataclass(frozen=True)
class InvoicePaymentConfirmation:
    """The PaymentIntent after confirmation. ``status``: ``succeeded`` or ``processing`` (the
    webhook marks the invoice paid), or ``requires_action`` (the browser runs 3-D Secure with
    ``stripe.confirmCardPayment(client_secret)``)."""

    status: str
    payment_intent: str
    client_secret: str


def invoice_payment_confirm(*, invoice_id: int, token: str) -> InvoicePaymentConfirmation:
    """Confirm the invoice's open PaymentIntent with a Stripe.js card token (``tok_…``). Raises
    what ``invoice_payment_intent_create`` raises, ``PaymentDeclined`` for a declined card, or
    ``PaymentConfigurationError`` for a token that is not one."""
    if not token.startswith("tok_"):
        raise PaymentConfigurationError(
            "The card was not tokenized by Stripe.js (expected a tok_… token): reload the page and try again.",
            code="invalid_token",
        )
    intent = services.invoice_payment_intent_create(invoice_id=invoice_id)
    gateway = services.stripe_gateway()
    customer = ""
    if not gateway.is_stripe:
        customer = services.stripe_customer_reference(organization=intent.payment.organization)
    confirmed = gateway.payment_intent_confirm_token(intent.payment_intent, token=token, customer_reference=customer)
    if confirmed.status in ("processing", "requires_capture", "succeeded"):
        # Paid or being paid: its event is on the way. No second attempt meanwhile.
        Payment.objects.filter(pk=intent.payment.pk, status=Payment.Status.REQUIRES_PAYMENT).update(
            status=Payment.Status.PROCESSING
        )
    status = "processing" if confirmed.status == "requires_capture" else confirmed.status
    return InvoicePaymentConfirmation(status, confirmed.id, intent.client_secret)


# --- Saving a card --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetupStart:
    """What the browser needs for ``stripe.confirmCardSetup(client_secret, {payment_method: {card}})``."""

    setup_intent: str
    client_secret: str
    publishable_key: str
    js_url: str


def payment_method_setup_start(*, organization: Organization) -> SetupStart:
    """A SetupIntent (off-session use) on the organization's Stripe customer."""
    gateway = services.stripe_gateway()
    customer = services.stripe_customer_reference(organization=organization)
    setup_intent, client_secret = gateway.setup_intent_create(
        customer_reference=customer,
        metadata={"organization": str(organization.pk)},
        idempotency_key=f"setup:{organization.pk}:{uuid.uuid4()}",
    )
    return SetupStart(setup_intent, client_secret, publishable_key(), js_url())


@transaction.atomic
def payment_method_setup_finish(
    *, organization: Organization, setup_intent: str, actor: User | None = None, actor_api_key: ApiKey | None = None
) -> PaymentMethod:
    """Store the card a confirmed SetupIntent saved (the first one becomes the default). Raises
    ``PaymentMethodSetupInvalid``, ``PaymentDeclined`` (not confirmed) or another ``PaymentError``."""
    if not setup_intent.startswith("seti_"):
        raise PaymentMethodSetupInvalid("Expected a SetupIntent id (seti_…): add the card again.")
    result, customer, metadata = services.stripe_gateway().setup_intent_result(setup_intent)
    if metadata.get("organization") != str(organization.pk):
        raise PaymentMethodSetupInvalid("That card was set up for another organization: add the card again here.")
    method, _created = PaymentMethod.objects.update_or_create(
        gateway=services.STRIPE, gateway_reference=result.gateway_reference,
        defaults={"organization": organization, "customer_reference": customer, **result.stored_fields()},
    )  # fmt: skip
    audit_record(action="payment_method.save", organization=organization, actor=actor, actor_api_key=actor_api_key,
                 obj=method, after={"gateway": services.STRIPE, "label": method.label})  # fmt: skip
    if not PaymentMethod.objects.filter(organization=organization, is_default=True).exists():
        method = payment_method_make_default(payment_method=method, actor=actor, actor_api_key=actor_api_key)
    return method


# --- Default, fallback, removal -------------------------------------------------------------------


@transaction.atomic
def payment_method_make_default(
    *, payment_method: PaymentMethod, actor: User | None = None, actor_api_key: ApiKey | None = None
) -> PaymentMethod:
    """Charge this method first (the previous default becomes an ordinary saved method; a fallback
    that becomes the default stops being the fallback)."""
    return payment_method_set_default(
        payment_method=payment_method, is_default=True, actor=actor, actor_api_key=actor_api_key
    )


@transaction.atomic
def payment_method_make_fallback(
    *, payment_method: PaymentMethod, actor: User | None = None, actor_api_key: ApiKey | None = None
) -> PaymentMethod:
    """Charge this method when the default is declined. The default itself cannot be its fallback."""
    if payment_method.is_default:
        raise PaymentMethodSetupInvalid(
            f"{payment_method.label} is the default payment method: make another method the default first."
        )
    PaymentMethod.objects.filter(organization_id=payment_method.organization_id, is_fallback=True).exclude(
        pk=payment_method.pk
    ).update(is_fallback=False)
    payment_method.is_fallback = True
    payment_method.save(update_fields=["is_fallback"])
    audit_record(action="payment_method.update", organization=payment_method.organization, actor=actor,
                 actor_api_key=actor_api_key, obj=payment_method, after={"is_fallback": True})  # fmt: skip
    return payment_method


def payment_method_remove(
    *, payment_method: PaymentMethod, actor: User | None = None, actor_api_key: ApiKey | None = None
) -> None:
    """Detach the method at its gateway, then forget it; when it was the default, the fallback takes
    its place. Refused (``PaymentMethodInUse``) while a top-up rule charges it first; a gateway that
    cannot be reached leaves it saved (try again)."""
    if payment_method.top_up_rules_primary.exists():
        payment_method_delete(payment_method=payment_method, actor=actor, actor_api_key=actor_api_key)  # raises
    gateway = gateway_for(payment_method.gateway)
    detach = getattr(gateway, "payment_method_detach", None)
    if detach is not None:
        try:
            detach(payment_method.gateway_reference, customer_reference=payment_method.customer_reference)
        except PaymentTemporaryFailure:
            raise
        except PaymentError as exc:
            # Already detached or deleted at the gateway: it cannot be charged either way.
            logger.info("payment method %s not detached at %s: %s", payment_method.pk, gateway.slug, exc.message)
    was_default, organization_id = payment_method.is_default, payment_method.organization_id
    with transaction.atomic():
        payment_method_delete(payment_method=payment_method, actor=actor, actor_api_key=actor_api_key)
        fallback = PaymentMethod.objects.filter(organization_id=organization_id, is_fallback=True).first()
        if was_default and fallback is not None:
            # The fallback was the next to charge: it takes the default's place.
            payment_method_make_default(payment_method=fallback, actor=actor, actor_api_key=actor_api_key)

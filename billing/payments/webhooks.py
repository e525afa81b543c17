"""``POST /webhooks/stripe/`` and ``POST /webhooks/paypal/``: the gateways' signed event deliveries.

The signature is checked over the raw body before anything is stored (400 otherwise, so a forged
or replayed delivery leaves no trace); the event is stored once by id and answered with 200 at
once; a task applies it after commit. Stripe and PayPal retry a delivery that did not get a 2xx.
"""

from __future__ import annotations

import logging

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from aggregator.api.exceptions import error_body
from billing.payments import services
from billing.payments.gateways.base import PaymentConfigurationError, WebhookInvalid

logger = logging.getLogger(__name__)


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> JsonResponse:
    try:
        # The one header it needs, not ``request.headers`` (which parses them all).
        signature = {"Stripe-Signature": request.META.get("HTTP_STRIPE_SIGNATURE", "")}
        record, created = services.webhook_event_receive(gateway=services.STRIPE, body=request.body, headers=signature)
    except WebhookInvalid as exc:
        logger.warning("Stripe webhook refused: %s", exc.message)
        return JsonResponse(error_body("webhook_invalid", exc.message), status=400)
    except PaymentConfigurationError as exc:
        # Our misconfiguration: not 2xx, so Stripe delivers again once it is fixed.
        logger.error("Stripe webhook not accepted: %s", exc.message)
        return JsonResponse(error_body("payments_unavailable", exc.message), status=503)
    return JsonResponse({"received": True, "event": record.event_id, "duplicate": not created})


@csrf_exempt
@require_POST
def paypal_webhook(request: HttpRequest) -> JsonResponse:
    """PayPal's deliveries, verified against its signing certificate (``PayPalGateway.parse_webhook``)."""
    try:
        record, created = services.webhook_event_receive(gateway="paypal", body=request.body, headers=request.headers)
    except WebhookInvalid as exc:
        logger.warning("PayPal webhook refused: %s", exc.message)
        return JsonResponse(error_body("webhook_invalid", exc.message), status=400)
    except PaymentConfigurationError as exc:
        logger.error("PayPal webhook not accepted: %s", exc.message)
        return JsonResponse(error_body("payments_unavailable", exc.message), status=503)
    return JsonResponse({"received": True, "event": record.event_id, "duplicate": not created})

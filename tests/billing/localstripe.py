"""A localstripe server for tests (billing/payments/localstripe.py runs it).

``localstripe_server`` (session) starts it on a free port, waits until it answers on 127.0.0.1 and
stops it at the end; ``localstripe`` (per test) empties its data first and, after the test, points
the webhooks the test registered at a closed port, so late deliveries cannot reach the next test.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import stripe

from billing.payments.localstripe import SECRET_KEY, LocalStripe, free_port, start, stop

__all__ = [
    "PUBLISHABLE_KEY",
    "SECRET_KEY",
    "WEBHOOK_SECRET",
    "LocalStripe",
    "event_deliverer",
    "localstripe",
    "localstripe_server",
    "stripe_settings_for",
]


@pytest.fixture(scope="session")
def localstripe_server() -> Iterator[LocalStripe]:
    """One localstripe process for the test session, on a free port of 127.0.0.1."""
    server = start(port=free_port())
    try:
        yield server
    finally:
        stop(server.process)
        server.log.unlink(missing_ok=True)


@pytest.fixture
def localstripe(localstripe_server: LocalStripe) -> Iterator[LocalStripe]:
    """The session's localstripe, emptied for this test."""
    localstripe_server.flush()
    yield localstripe_server
    localstripe_server.silence_webhooks()


# --- The Stripe settings and webhook deliveries of tests against localstripe ---------------------

PUBLISHABLE_KEY = "pk_test_FAKE_localstripe_0000"
WEBHOOK_SECRET = "whsec_FAKE_localstripe_0000"


def stripe_settings_for(settings: Any, server: LocalStripe) -> None:
    """Point the Stripe gateway (beside the test gateway) at ``server``."""
    settings.PAYMENT_GATEWAYS = [
        "billing.payments.gateways.fake.FakeGateway",
        "billing.payments.gateways.stripe.StripeGateway",
    ]
    settings.STRIPE_SECRET_KEY = SECRET_KEY
    settings.STRIPE_PUBLISHABLE_KEY = PUBLISHABLE_KEY
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_API_BASE = server.url
    settings.STRIPE_JS_URL = f"{server.url}/js.stripe.com/v3/"
    settings.STRIPE_MAX_NETWORK_RETRIES = 0


def event_deliverer(*, client: Any, capture: Any, server: LocalStripe) -> Callable[[str, str], None]:
    """``send(event_type, object_id)``: deliver localstripe's latest such event to the webhook,
    signed as Stripe signs it, and run what it queues."""

    def send(event_type: str, object_id: str) -> None:
        events = [e for e in server.events(event_type) if e["data"]["object"]["id"] == object_id]
        assert events, f"localstripe made no {event_type} event for {object_id}"
        raw = json.dumps(events[-1])
        header = stripe.WebhookSignature.generate_signature_header(raw, WEBHOOK_SECRET)
        with capture(execute=True):
            response = client.post(
                "/webhooks/stripe/", data=raw, content_type="application/json", HTTP_STRIPE_SIGNATURE=header
            )
        assert response.status_code == 200, response.content

    return send

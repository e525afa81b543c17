"""The local PayPal sandbox for tests (``billing.payments.sandbox.paypal``) over real loopback HTTP.

``paypal_server`` (session) serves one sandbox on a free port of 127.0.0.1; ``paypal`` (per test)
empties it and points the PayPal settings at it. ``buyer`` plays the person at PayPal: it opens the
approval page and clicks a button there, over HTTP, and returns where PayPal sends them back.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from billing.payments.gateways import FAKE_GATEWAY, PAYPAL_GATEWAY
from billing.payments.sandbox.paypal import CLIENT_ID, CLIENT_SECRET, WEBHOOK_ID, PayPalSandbox
from providers.sandbox.base import SandboxServer


@pytest.fixture(scope="session")
def paypal_server() -> Iterator[SandboxServer]:
    server = SandboxServer(PayPalSandbox()).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def paypal(paypal_server: SandboxServer, settings: Any) -> PayPalSandbox:
    """The session's sandbox, emptied, with the PayPal settings pointing at it."""
    sandbox = paypal_server.vendor
    assert isinstance(sandbox, PayPalSandbox)
    sandbox.reset()
    settings.PAYMENT_GATEWAYS = [FAKE_GATEWAY, PAYPAL_GATEWAY]
    settings.PAYPAL_CLIENT_ID, settings.PAYPAL_CLIENT_SECRET = CLIENT_ID, CLIENT_SECRET
    settings.PAYPAL_WEBHOOK_ID = WEBHOOK_ID
    settings.PAYPAL_API_BASE = paypal_server.url
    settings.PAYPAL_WEBHOOK_CERT_HOSTS = ["127.0.0.1"]
    sandbox.base_url = paypal_server.url
    return sandbox


class Buyer:
    """The person at PayPal's approval page."""

    def __init__(self, sandbox: PayPalSandbox) -> None:
        self.sandbox = sandbox

    def page(self, approve_url: str) -> httpx.Response:
        return httpx.get(approve_url, timeout=10)

    def click(self, approve_url: str, button: str = "approve") -> str:
        """Click ``approve``, ``decline`` (approve with a card capture will decline) or ``cancel``
        on the page at ``approve_url``; returns the path (and query) PayPal sends them back to."""
        page = self.page(approve_url)
        assert page.status_code == 200, page.text
        assert f'value="{button}"' in page.text
        token = dict(part.split("=", 1) for part in urlsplit(approve_url).query.split("&"))["token"]
        answer = httpx.post(
            f"{urlsplit(approve_url).scheme}://{urlsplit(approve_url).netloc}/checkoutnow",
            data={"token": token, "action": button}, timeout=10, follow_redirects=False,
        )  # fmt: skip
        assert answer.status_code == 302, answer.text
        back = urlsplit(answer.headers["location"])
        return f"{back.path}?{back.query}"


@pytest.fixture
def buyer(paypal: PayPalSandbox) -> Buyer:
    return Buyer(paypal)

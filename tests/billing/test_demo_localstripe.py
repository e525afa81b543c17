"""The offline demo's Stripe: ``run_localstripe`` serves localstripe where ``STRIPE_API_BASE``
points and has it deliver signed webhooks to ``SITE_URL/webhooks/stripe/``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe

from billing.payments.localstripe import free_port

ROOT = Path(__file__).resolve().parents[2]
DEMO_KEY = "sk_test_FAKE_demo"
DEMO_WEBHOOK_SECRET = "whsec_FAKE_demo"


class _Site(BaseHTTPRequestHandler):
    received: list[tuple[str, bytes, str]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append((self.path, body, self.headers.get("Stripe-Signature", "")))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _wait(predicate: Any, seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v1/customers", auth=(DEMO_KEY, ""), timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_demo_localstripe_pays_and_posts_signed_webhooks_to_the_site() -> None:
    site = HTTPServer(("127.0.0.1", 0), _Site)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    port = free_port()
    stripe_url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DEBUG": "1",
        "DJANGO_SETTINGS_MODULE": "aggregator.settings",
        "STRIPE_SECRET_KEY": DEMO_KEY,
        "STRIPE_WEBHOOK_SECRET": DEMO_WEBHOOK_SECRET,
        "STRIPE_API_BASE": stripe_url,
        "SITE_URL": f"http://127.0.0.1:{site.server_port}",
    }
    command = subprocess.Popen(
        [sys.executable, "manage.py", "run_localstripe"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert _wait(lambda: _answers(stripe_url)), "localstripe did not start"
        api = stripe.StripeClient(DEMO_KEY, base_addresses={"api": stripe_url}, max_network_retries=0)
        method = api.v1.payment_methods.create(
            params={"type": "card", "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030,
                                              "cvc": "123"}}
        )  # fmt: skip
        intent = api.v1.payment_intents.create(params={"amount": 1234, "currency": "usd"})
        api.v1.payment_intents.update(intent.id, params={"payment_method": method.id})
        assert api.v1.payment_intents.confirm(intent.id).status == "succeeded"  # as Stripe.js on the pay page
        assert _wait(lambda: any(b"payment_intent.succeeded" in body for _, body, _ in _Site.received))
        path, body, signature = next(r for r in _Site.received if b"payment_intent.succeeded" in r[1])
        assert path == "/webhooks/stripe/"
        event = stripe.Webhook.construct_event(body, signature, DEMO_WEBHOOK_SECRET)
        assert (event["data"]["object"]["id"], event["data"]["object"]["amount"]) == (intent.id, 1234)
    finally:
        command.send_signal(signal.SIGTERM)
        command.wait(timeout=15)
        site.shutdown()
    assert not _answers(stripe_url), "localstripe outlived the command"


def test_the_command_refuses_a_stripe_address_that_is_not_loopback() -> None:
    env = {**os.environ, "DEBUG": "1", "DJANGO_SETTINGS_MODULE": "aggregator.settings",
           "STRIPE_API_BASE": "https://api.stripe.com"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "manage.py", "run_localstripe"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "set it to a loopback address with a port" in done.stderr


pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

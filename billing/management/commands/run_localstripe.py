"""Serve localstripe for the offline demo, with its webhooks pointed at this site."""

from __future__ import annotations

import signal
import threading
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from billing.payments import localstripe

WEBHOOK_ID = "demo"


class Command(BaseCommand):
    help = (
        "Run localstripe (Stripe's API and Stripe.js stand-in) on the loopback port of STRIPE_API_BASE "
        "and have it deliver signed webhooks to SITE_URL/webhooks/stripe/, until stopped."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        base = urlsplit(settings.STRIPE_API_BASE)
        if base.hostname not in {"127.0.0.1", "localhost"} or not base.port:
            raise CommandError(
                f"STRIPE_API_BASE is {settings.STRIPE_API_BASE}: set it to a loopback address with a port "
                "(e.g. http://127.0.0.1:8420) to run localstripe for the demo."
            )
        if not settings.STRIPE_SECRET_KEY.startswith("sk_test_") or not settings.STRIPE_WEBHOOK_SECRET:
            raise CommandError("Set STRIPE_SECRET_KEY (an sk_test_ key) and STRIPE_WEBHOOK_SECRET for the demo.")
        server = localstripe.start(port=base.port, secret_key=settings.STRIPE_SECRET_KEY)
        endpoint = f"{settings.SITE_URL}/webhooks/stripe/"
        server.webhook(WEBHOOK_ID, url=endpoint, secret=settings.STRIPE_WEBHOOK_SECRET)
        self.stdout.write(
            f"localstripe at {server.url} (Stripe.js at {server.url}/js.stripe.com/v3/), webhooks to {endpoint}"
        )
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        while not stop.wait(1):
            if server.process.poll() is not None:
                raise CommandError(f"localstripe exited with {server.process.returncode}:\n{server.log_tail()}")
        localstripe.stop(server.process)

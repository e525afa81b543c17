from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from billing.payments.sandbox.paypal import demo_server as paypal_demo_server
from providers.sandbox.base import SandboxServer
from providers.sandbox.demo import DEMO_SANDBOXES


class Command(BaseCommand):
    help = "Serve the sandbox vendor APIs on 127.0.0.1 (ports from SANDBOX_PORT_BASE) until stopped."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--sync-demo", action="store_true", help="Sync, settle and invoice the demo customers once serving."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        servers = []
        for sandbox in DEMO_SANDBOXES:
            server = SandboxServer(sandbox.build(), port=sandbox.port).start()
            servers.append(server)
            self.stdout.write(f"{sandbox.vendor:>13} sandbox at {server.url}{sandbox.api_path}")
        paypal = paypal_demo_server()  # when PAYPAL_API_BASE points at loopback (make demo-env)
        if paypal is not None:
            servers.append(paypal)
            self.stdout.write(f"{'paypal':>13} sandbox at {paypal.url} (buyers approve at {paypal.url}/checkoutnow)")
        if options["sync_demo"]:
            from aggregator.system.demo import demo_pipeline

            # In the background, so the servers answer while the demo syncs, settles and closes.
            threading.Thread(target=demo_pipeline, kwargs={"stdout": self.stdout}, daemon=True).start()
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        stop.wait()
        for server in servers:
            server.stop()

"""A localstripe server (PyPI ``localstripe``): a stateful stand-in for Stripe's API and Stripe.js
that the tests and the offline demo run as a subprocess on 127.0.0.1.

Notes (payments.md §2.1): localstripe keeps its data in memory and pickles it after every change
to a fixed ``/tmp/localstripe.pickle`` shared by every instance on the machine; ``--from-scratch``
keeps us from loading another instance's data. It ignores idempotency keys and never retries a
webhook. ``DELETE /_config/data`` does not forget registered webhooks. Its Stripe.js stand-in is
served at ``<url>/js.stripe.com/v3/``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

SECRET_KEY = "sk_test_FAKE_localstripe_0000"  # noqa: S105 (localstripe accepts any sk_test_ key)
START_TIMEOUT = 20.0
CLOSED_URL = "http://127.0.0.1:9/closed"  # the discard port: nothing listens, deliveries fail


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def command() -> list[str]:
    script = Path(sys.executable).with_name("localstripe")
    if script.exists():
        return [str(script)]
    found = shutil.which("localstripe")
    return [found] if found else [sys.executable, "-m", "localstripe"]


@dataclass
class LocalStripe:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    webhooks: set[str] = field(default_factory=set)
    secret_key: str = SECRET_KEY

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=(self.secret_key, ""), timeout=10)

    def flush(self) -> None:
        """Forget customers, payment methods, PaymentIntents, events (not webhooks)."""
        with self.http() as client:
            client.delete("/_config/data").raise_for_status()

    def webhook(self, webhook_id: str, *, url: str, secret: str, events: Sequence[str] | None = None) -> None:
        """Have localstripe POST signed events (``Stripe-Signature: t=…,v1=…``) to ``url``, once,
        about a second after each event."""
        data: dict[str, Any] = {"url": url, "secret": secret}
        if events:
            data["events[]"] = list(events)
        with self.http() as client:
            client.post(f"/_config/webhooks/{webhook_id}", data=data).raise_for_status()
        self.webhooks.add(webhook_id)

    def silence_webhooks(self) -> None:
        for webhook_id in sorted(self.webhooks):
            with self.http() as client:
                client.post(f"/_config/webhooks/{webhook_id}", data={"url": CLOSED_URL, "secret": "closed"})
        self.webhooks.clear()

    def events(self, event_type: str | None = None) -> list[dict[str, Any]]:
        """The events localstripe made, oldest first (as it would deliver them)."""
        params = {"limit": "100"} | ({"type": event_type} if event_type else {})
        with self.http() as client:
            response = client.get("/v1/events", params=params)
            response.raise_for_status()
        return sorted(response.json()["data"], key=lambda e: (e["created"], e["id"]))

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def wait_until_up(server: LocalStripe) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"localstripe exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            with server.http() as client:
                if client.get("/v1/customers", timeout=1).status_code == 200:
                    return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"localstripe did not answer on {server.url} within {START_TIMEOUT:.0f} s:\n{server.log_tail()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def start(*, port: int, secret_key: str = SECRET_KEY) -> LocalStripe:
    """Start ``localstripe --port <port> --from-scratch`` and wait until it answers."""
    log_fd, log_name = tempfile.mkstemp(prefix="localstripe-", suffix=".log")
    process = subprocess.Popen(  # noqa: S603 (our own command line)
        [*command(), "--port", str(port), "--from-scratch"],
        stdout=log_fd, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tempfile.gettempdir(),
    )  # fmt: skip
    os.close(log_fd)
    server = LocalStripe(url=f"http://127.0.0.1:{port}", process=process, log=Path(log_name), secret_key=secret_key)
    try:
        wait_until_up(server)
    except RuntimeError:
        stop(process)
        raise
    return server

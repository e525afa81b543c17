"""Harness for sandbox vendor servers: a threaded loopback HTTP server, deterministic synthetic
amounts, restated days and injectable faults (429 with Retry-After, 5xx, HTML, truncated JSON…)."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class SandboxRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def params(self, name: str) -> list[str]:
        return self.query.get(name, [])


@dataclass
class SandboxResponse:
    status: int = 200
    body: Any = None  # dict/list -> JSON; str/bytes -> sent as is
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"

    def encoded(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        if self.body is None:
            return b""
        return json.dumps(self.body).encode()


# Fault kinds a test can queue: the next matching request gets the fault instead of the answer.
FAULTS = ("rate_limit", "server_error", "html", "truncated", "timeout")


@dataclass
class Fault:
    kind: str
    path_contains: str = ""
    retry_after: int = 1
    status: int = 503

    def response(self) -> SandboxResponse:
        if self.kind == "rate_limit":
            return SandboxResponse(
                429,
                {"error": {"message": "Rate limit exceeded", "type": "rate_limit"}},
                headers={"Retry-After": str(self.retry_after)},
            )
        if self.kind == "server_error":
            return SandboxResponse(self.status, {"error": {"message": "Internal error", "type": "server_error"}})
        if self.kind == "html":
            return SandboxResponse(
                200,
                "<!doctype html><html><body><h1>Sign in</h1></body></html>",
                content_type="text/html; charset=utf-8",
            )
        if self.kind == "truncated":
            return SandboxResponse(200, '{"object": "page", "data": [{"object": "bucket", "start_ti')
        raise ValueError(f"Unknown fault {self.kind!r}")


class SandboxVendor:
    """Base of a vendor sandbox. Subclasses implement ``route``."""

    vendor = "sandbox"

    def __init__(self, *, seed: str = "demo") -> None:
        self.seed = seed
        self.faults: deque[Fault] = deque()
        # Restatements: bump a day's revision and the amounts for that day change.
        self.revisions: dict[date, int] = {}
        self.requests: list[SandboxRequest] = []
        self._lock = threading.Lock()

    # --- knobs for tests --------------------------------------------------------------------
    def inject(
        self, kind: str, *, path_contains: str = "", retry_after: int = 1, status: int = 503, times: int = 1
    ) -> None:
        if kind not in FAULTS:
            raise ValueError(f"Unknown fault {kind!r}; use one of {FAULTS}.")
        for _ in range(times):
            self.faults.append(Fault(kind, path_contains, retry_after, status))

    def restate(self, day: date) -> None:
        self.revisions[day] = self.revisions.get(day, 0) + 1

    # --- synthetic data -----------------------------------------------------------------------
    def amount(self, *parts: object, low: str = "0.50", high: str = "25.00", places: int = 6) -> Decimal:
        """A deterministic amount in [low, high) for the given parts (day, model, …) and revision."""
        day = next((p for p in parts if isinstance(p, date)), None)
        revision = self.revisions.get(day, 0) if day else 0
        digest = hashlib.sha256(
            "|".join(
                [
                    self.seed,
                    self.vendor,
                    str(revision),
                    *(p if isinstance(p, str) else repr(p) if isinstance(p, bytes) else str(p) for p in parts),
                ]
            ).encode()
        ).digest()
        fraction = Decimal(int.from_bytes(digest[:8], "big")) / Decimal(2**64)
        span = Decimal(high) - Decimal(low)
        return (Decimal(low) + span * fraction).quantize(Decimal(1).scaleb(-places))

    def count(self, *parts: object, low: int = 100, high: int = 100_000) -> int:
        return int(self.amount(*parts, low=str(low), high=str(high), places=0))

    # --- dispatch -----------------------------------------------------------------------------
    def dispatch(self, request: SandboxRequest) -> SandboxResponse:
        with self._lock:
            self.requests.append(request)
            for fault in list(self.faults):
                if fault.path_contains in request.path:
                    self.faults.remove(fault)
                    if fault.kind == "timeout":
                        return SandboxResponse(599)  # the handler sleeps past the client's timeout
                    return fault.response()
        return self.route(request)

    def route(self, request: SandboxRequest) -> SandboxResponse:
        raise NotImplementedError


def _make_handler(vendor: SandboxVendor, timeout_sleep: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            request = SandboxRequest(
                method=self.command,
                path=parts.path,
                query=parse_qs(parts.query, keep_blank_values=True),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
            )
            response = vendor.dispatch(request)
            if response.status == 599:
                import time

                time.sleep(timeout_sleep)
                response = SandboxResponse(504, {"error": {"message": "gateway timeout"}})
            payload = response.encoded()
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read the vendor's request log
            return

    return Handler


class SandboxServer:
    """Serve one sandbox vendor on 127.0.0.1 in a background thread."""

    def __init__(
        self, vendor: SandboxVendor, *, host: str = "127.0.0.1", port: int = 0, timeout_sleep: float = 2.0
    ) -> None:
        self.vendor = vendor
        self.httpd = ThreadingHTTPServer((host, port), _make_handler(vendor, timeout_sleep))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=lambda: self.httpd.serve_forever(poll_interval=0.05), name=f"sandbox-{vendor.vendor}", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> SandboxServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@contextmanager
def serve(vendor: SandboxVendor, **kwargs: Any) -> Iterator[SandboxServer]:
    server = SandboxServer(vendor, **kwargs).start()
    try:
        yield server
    finally:
        server.stop()

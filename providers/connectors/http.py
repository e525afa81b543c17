"""The one place connectors talk HTTP: timeouts, retries honoring Retry-After, JSON decoding,
and vendor errors mapped to ours. Messages name the vendor and endpoint, never a credential."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from providers.connectors.base import CredentialsRejected, MalformedPayload, TransientVendorError

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
MAX_RETRY_AFTER_SECONDS = 120.0


def retry_after_seconds(value: str | None, *, default: float) -> float:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), capped."""
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        try:
            from datetime import UTC, datetime

            seconds = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            return default
    return max(0.0, min(seconds, MAX_RETRY_AFTER_SECONDS))


class VendorHttpClient:
    """A small JSON client for one vendor.

    ``auth_hint`` completes the message for 401/403 ("create an admin key at …").
    ``classify`` may turn a response into a vendor-specific exception (e.g. insufficient_quota)
    before the generic mapping runs.
    """

    def __init__(
        self,
        *,
        vendor: str,
        base_url: str,
        headers: Mapping[str, str],
        auth_hint: str,
        transport: httpx.BaseTransport | None = None,
        max_attempts: int = 4,
        backoff_seconds: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        classify: Callable[[httpx.Response, str], Exception | None] | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    ) -> None:
        self.vendor = vendor
        self.auth_hint = auth_hint
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.sleep = sleep
        self.classify = classify
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=dict(headers),
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )

    def close(self) -> None:
        self._client.close()

    def request_json(
        self, method: str, path: str, *, params: Any = None, json_body: Any = None, endpoint: str | None = None
    ) -> Any:
        """Send a request and return the decoded JSON body (``None`` for 204)."""
        endpoint = endpoint or path.split("?")[0]
        last_error = ""
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = self._client.request(method, path, params=params, json=json_body)
            except httpx.TimeoutException:
                last_error = "timed out"
                self._pause(attempt, None)
                continue
            except httpx.TransportError as exc:
                last_error = f"could not connect ({type(exc).__name__})"
                self._pause(attempt, None)
                continue
            if self.classify is not None:
                special = self.classify(response, endpoint)
                if special is not None:
                    raise special
            if response.status_code == 429 or response.status_code >= 500:
                last_error = f"answered HTTP {response.status_code}"
                self._pause(attempt, response.headers.get("Retry-After"))
                continue
            if response.status_code in (401, 403):
                raise CredentialsRejected(
                    f"{self.vendor} rejected the credentials ({response.status_code}) at {endpoint}: {self.auth_hint}",
                    vendor=self.vendor,
                    endpoint=endpoint,
                )
            if response.status_code >= 400:
                raise MalformedPayload(
                    f"{self.vendor} refused the request to {endpoint} (HTTP {response.status_code}): "
                    f"{_short_error(response)}",
                    vendor=self.vendor,
                    endpoint=endpoint,
                )
            if response.status_code == 204 or not response.content:
                return None
            return self._decode(response, endpoint)
        raise TransientVendorError(
            f"{self.vendor} {endpoint} {last_error} after {self.max_attempts} attempts; "
            "the sync will be retried later.",
            vendor=self.vendor,
            endpoint=endpoint,
        )

    def get_json(self, path: str, *, params: Any = None, endpoint: str | None = None) -> Any:
        return self.request_json("GET", path, params=params, endpoint=endpoint)

    def _pause(self, attempt: int, retry_after: str | None) -> None:
        if attempt >= self.max_attempts:
            return
        default = self.backoff_seconds * (2 ** (attempt - 1))
        delay = retry_after_seconds(retry_after, default=default)
        logger.info("%s: retrying in %.1fs (attempt %d of %d)", self.vendor, delay, attempt + 1, self.max_attempts)
        self.sleep(delay)

    def _decode(self, response: httpx.Response, endpoint: str) -> Any:
        content_type = response.headers.get("content-type", "")
        if "json" not in content_type:
            kind = "an HTML page" if "html" in content_type or response.text.lstrip().startswith("<") else content_type
            raise MalformedPayload(
                f"{self.vendor} {endpoint} returned {kind or 'a non-JSON body'} instead of JSON; "
                "check the API base address (a proxy or login page may be answering).",
                vendor=self.vendor,
                endpoint=endpoint,
            )
        try:
            return json.loads(response.content, parse_float=str)
        except ValueError as exc:
            raise MalformedPayload(
                f"{self.vendor} {endpoint} returned invalid or truncated JSON ({exc.msg} at position {exc.pos}).",  # type: ignore[attr-defined]
                vendor=self.vendor,
                endpoint=endpoint,
            ) from None


def _short_error(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return str(error.get("message") or error.get("type") or error)[:200]
        return str(error)[:200]
    return str(body)[:200]

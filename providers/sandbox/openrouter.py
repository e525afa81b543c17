"""A local OpenRouter: ``/api/v1/credits`` and ``/api/v1/activity`` (vendor-apis.md §3).

Served as documented: ``{"data": {...}}`` / ``{"data": [...]}`` with money and counts as JSON **numbers**
(written from Decimals digit for digit, never through a float). Point a connector at ``<server url>/api/v1``.

Keys: ``Authorization: Bearer sk-or-v1-…``. By this sandbox's convention management keys start with
``sk-or-v1-mgmt-``; any other ``sk-or-v1-`` key is an inference key, answered 403 on both endpoints, as OpenRouter
does for management endpoints. Other keys, and keys in ``revoked_keys``, get 401.

Activity covers the last 30 completed UTC days only (a ``date`` outside them is a 400). Items are deterministic per
seed, day and revision (``restate(day)`` changes only that day); a day is quiet (``"data": []``) when
``is_quiet(day)`` says so, about one day in six plus any in ``quiet_days``.

The balance is explicit so tests and the demo can simulate consumption: ``set_credits(total_credits,
total_usage)``, ``spend(amount)`` and ``top_up(amount)``; it starts at the documented 100.5 / 25.75.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from providers.sandbox.base import SandboxRequest, SandboxResponse, SandboxVendor

API_PREFIX = "/api/v1"
KEY_PREFIX = "sk-or-v1-"
MANAGEMENT_KEY_PREFIX = "sk-or-v1-mgmt-"
ACTIVITY_DAYS = 30

# (model, model_permaslug, provider_name) served by the sandbox.
MODELS = (
    ("openai/gpt-4.1", "openai/gpt-4.1-2025-04-14", "OpenAI"),
    ("anthropic/claude-sonnet-4.5", "anthropic/claude-4.5-sonnet-20250929", "Anthropic"),
    ("google/gemini-2.5-flash", "google/gemini-2.5-flash", "Google AI Studio"),
    ("meta-llama/llama-3.3-70b-instruct", "meta-llama/llama-3.3-70b-instruct", "Together"),
)


class OpenRouterSandbox(SandboxVendor):
    vendor = "openrouter"

    def __init__(
        self, *, seed: str = "demo", total_credits: Decimal = Decimal("100.5"), total_usage: Decimal = Decimal("25.75")
    ) -> None:
        super().__init__(seed=seed)
        self.total_credits = total_credits
        self.total_usage = total_usage
        self.quiet_days: set[date] = set()
        self.revoked_keys: set[str] = set()

    # --- knobs --------------------------------------------------------------------------------

    def set_credits(self, total_credits: Decimal, total_usage: Decimal) -> None:
        with self._lock:
            self.total_credits, self.total_usage = total_credits, total_usage

    def spend(self, amount: Decimal) -> None:
        with self._lock:
            self.total_usage += amount

    def top_up(self, amount: Decimal) -> None:
        with self._lock:
            self.total_credits += amount

    def is_quiet(self, day: date) -> bool:
        # Keyed on the day's text, not the date, so restating a day does not change whether it is quiet.
        return day in self.quiet_days or self.count("quiet", day.isoformat(), low=0, high=6) == 0

    def activity(self, day: date) -> list[dict[str, Any]]:
        """The day's items as OpenRouter lists them: one per model endpoint used that day."""
        if self.is_quiet(day):
            return []
        return [
            self._item(day, *model) for model in MODELS if self.count("used", day.isoformat(), model[0], low=0, high=4)
        ]

    def _item(self, day: date, model: str, permaslug: str, provider: str) -> dict[str, Any]:
        prompt = self.count(day, model, "prompt", low=1_000, high=3_000_000)
        completion = self.count(day, model, "completion", low=100, high=600_000)
        return {
            "byok_usage_inference": Decimal(0),
            "completion_tokens": completion,
            "date": day.isoformat(),
            "endpoint_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"openrouter-sandbox/{permaslug}/{provider}")),
            "model": model,
            "model_permaslug": permaslug,
            "prompt_tokens": prompt,
            "provider_name": provider,
            "reasoning_tokens": self.count(day, model, "reasoning", low=0, high=completion),
            "requests": self.count(day, model, "requests", low=1, high=5_000),
            "usage": self.amount(day, model, "usage", low="0.001", high="18.00", places=6),
        }

    # --- routing ------------------------------------------------------------------------------

    def route(self, request: SandboxRequest) -> SandboxResponse:
        path = request.path.removeprefix(API_PREFIX)
        if not request.path.startswith(API_PREFIX) or path not in ("/credits", "/activity"):
            return _error(404, "Not Found")
        if request.method != "GET":
            return _error(405, "Method Not Allowed")
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        if path == "/credits":
            with self._lock:
                credits = {"total_credits": self.total_credits, "total_usage": self.total_usage}
            return _json(200, {"data": credits})
        return self._activity(request)

    def _authenticate(self, request: SandboxRequest) -> SandboxResponse | None:
        authorization = request.headers.get("authorization", "")
        key = authorization.removeprefix("Bearer ").strip() if authorization.startswith("Bearer ") else ""
        if not key.startswith(KEY_PREFIX) or key in self.revoked_keys:
            return _error(401, "No auth credentials found")
        if not key.startswith(MANAGEMENT_KEY_PREFIX):
            return _error(403, "Only management keys can perform this operation")
        return None

    def _activity(self, request: SandboxRequest) -> SandboxResponse:
        today = datetime.now(UTC).date()
        served = [today - timedelta(days=offset) for offset in range(ACTIVITY_DAYS, 0, -1)]
        text = request.param("date")
        if text is None:
            return _json(200, {"data": [item for day in served for item in self.activity(day)]})
        try:
            day = date.fromisoformat(text)
        except ValueError:
            return _error(400, f"Invalid date {text!r}: use YYYY-MM-DD")
        if day not in served:
            return _error(400, "Date must be within the last 30 completed UTC days")
        return _json(200, {"data": self.activity(day)})


def encode_json(value: Any) -> str:
    """JSON with Decimals written as numbers, digit for digit (``json`` would need a float on the way)."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(key)}: {encode_json(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(encode_json(item) for item in value) + "]"
    return json.dumps(value)


def _json(status: int, body: Any) -> SandboxResponse:
    return SandboxResponse(status, encode_json(body))


def _error(status: int, message: str) -> SandboxResponse:
    return SandboxResponse(status, {"error": {"code": status, "message": message}})

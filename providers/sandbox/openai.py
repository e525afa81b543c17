"""A loopback OpenAI: ``/v1/organization/costs`` and ``/v1/organization/usage/<kind>``.

Shapes follow vendor-apis.md §1.5 literally, with the real-response quirks of §1.6: the first
bucket starts at the requested ``start_time`` (so it can be partial), empty days come as
``"results": []``, results carry an unknown ``organization_id``, and ``amount.value`` can be
switched to a numeric string. Amounts are deterministic for any window (``SandboxVendor.amount``)
and change when a day is restated.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from providers.sandbox.base import SandboxRequest, SandboxResponse, SandboxVendor

DAY_SECONDS = 86_400
MODELS = ("gpt-4o-2024-08-06", "gpt-4o-mini-2024-07-18")
PROJECTS = ("proj_alpha", "proj_beta")
DIRECTIONS = ("input", "output")
ORGANIZATION_ID = "org-sandbox"
API_KEY_ID = "key_sandbox0001"
USER_ID = "user-sandbox"
# Every seventh day (by ordinal) has no usage at all, as real organizations have idle days.
EMPTY_EVERY = 7
COSTS_GROUPS = ("project_id", "line_item", "api_key_id")
COMMON_QUERY = {"start_time", "end_time", "bucket_width", "limit", "page", "group_by", "project_ids", "api_key_ids"}
MICRO_DOLLAR = Decimal("0.000001")
QUOTA_EXCEEDED = {
    "message": "You exceeded your current quota, please check your plan and billing details.",
    "type": "insufficient_quota",
    "param": None,
    "code": "insufficient_quota",
}


@dataclass(frozen=True)
class UsageKind:
    """One usage endpoint: its result object, its models, the metrics it counts (with the range of
    their daily values) and the group_by values it accepts."""

    result: str
    models: tuple[str, ...]
    metrics: tuple[tuple[str, int, int], ...]
    groups: tuple[str, ...] = ("project_id", "user_id", "api_key_id", "model")


REQUESTS_METRIC = ("num_model_requests", 1, 2_000)
USAGE_KINDS = {
    # Real completions buckets carry only these fields, not the newer ones of the spec example.
    "completions": UsageKind(
        "completions",
        MODELS,
        (
            ("input_tokens", 10_000, 5_000_000),
            ("output_tokens", 1_000, 1_000_000),
            ("input_cached_tokens", 0, 0),  # its upper bound is the day's input_tokens
            ("input_audio_tokens", 0, 1),
            ("output_audio_tokens", 0, 1),
            REQUESTS_METRIC,
        ),
        ("project_id", "user_id", "api_key_id", "model", "batch", "service_tier"),
    ),
    "embeddings": UsageKind(
        "embeddings", ("text-embedding-3-small",), (("input_tokens", 1_000, 900_000), REQUESTS_METRIC)
    ),
    "moderations": UsageKind(
        "moderations", ("omni-moderation-latest",), (("input_tokens", 100, 90_000), REQUESTS_METRIC)
    ),
    "images": UsageKind(
        "images",
        ("dall-e-3",),
        (("images", 1, 200), REQUESTS_METRIC),
        ("project_id", "user_id", "api_key_id", "model", "size", "source"),
    ),
    "audio_speeches": UsageKind("audio_speeches", ("tts-1",), (("characters", 100, 500_000), REQUESTS_METRIC)),
    "audio_transcriptions": UsageKind(
        "audio_transcriptions", ("whisper-1",), (("seconds", 10, 36_000), REQUESTS_METRIC)
    ),
}
# The single value each grouping dimension takes when grouped (projects and models vary).
FIXED_GROUP_VALUES: dict[str, Any] = {
    "api_key_id": API_KEY_ID,
    "user_id": USER_ID,
    "batch": False,
    "service_tier": "default",
    "size": "1024x1024",
    "source": "image.generation",
}


@dataclass(frozen=True)
class Query:
    """The parameters of one listing request, validated."""

    start: int
    end: int
    limit: int
    groups: frozenset[str]


# A per-endpoint result builder: (day, fraction of the day covered, group_by) -> results.
Results = Callable[[date, Decimal, frozenset[str]], list[dict[str, Any]]]


class BadRequest(Exception):
    """A request OpenAI would refuse with 400 invalid_request_error."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class OpenAISandbox(SandboxVendor):
    vendor = "openai"

    def __init__(self, *, seed: str = "demo") -> None:
        super().__init__(seed=seed)
        # Knobs for tests and the demo.
        self.credits_exhausted = False
        self.string_amounts = False  # odd rows of each bucket send amount.value as "12.345678"
        self.revoked_keys: set[str] = set()
        # Result rows served per request, so tests can compare totals across pages.
        self.results_served: list[int] = []

    # --- deterministic data -----------------------------------------------------------------

    def is_empty(self, day: date) -> bool:
        return day.toordinal() % EMPTY_EVERY == 0

    def cost_amount(self, day: date, project: str, line_item: str) -> Decimal:
        """The full-day cost of one line item of one project, in dollars."""
        return self.amount(day, project, line_item)

    def cost_tokens(self, day: date, project: str, line_item: str) -> int:
        return self.count(day, project, line_item, "tokens", low=1_000, high=5_000_000)

    def usage_value(self, kind: str, day: date, project: str, model: str, metric: str) -> int:
        """The full-day value of one usage metric; cached tokens never exceed input tokens."""
        low, high = next((lo, hi) for name, lo, hi in USAGE_KINDS[kind].metrics if name == metric)
        if metric == "input_cached_tokens":
            high = self.usage_value(kind, day, project, model, "input_tokens")
        if high - low <= 1:
            return low
        return self.count(day, kind, project, model, metric, low=low, high=high)

    # --- routing ----------------------------------------------------------------------------

    def route(self, request: SandboxRequest) -> SandboxResponse:
        refusal = self._authenticate(request)
        if refusal is not None:
            return refusal
        if self.credits_exhausted:
            return SandboxResponse(429, {"error": dict(QUOTA_EXCEEDED)})
        path = request.path.rstrip("/")
        try:
            if request.method == "GET" and path == "/v1/organization/costs":
                return self._page(request, self._costs_params(request), self._costs_results)
            prefix = "/v1/organization/usage/"
            if request.method == "GET" and path.startswith(prefix) and path[len(prefix) :] in USAGE_KINDS:
                kind = path[len(prefix) :]
                return self._page(request, self._usage_params(request, kind), self._usage_results(kind))
        except BadRequest as exc:
            return _error(400, exc.message, "invalid_request_error", param=exc.param)
        return _error(404, f"Invalid URL ({request.method} {request.path})", "invalid_request_error")

    def _authenticate(self, request: SandboxRequest) -> SandboxResponse | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme != "Bearer" or not token.strip():
            return _error(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                "invalid_request_error",
            )
        token = token.strip()
        if token.startswith("sk-proj-"):
            return _error(
                401,
                "Project API keys cannot be used here: the Usage and Costs APIs require an admin key (sk-admin-…).",
                "invalid_request_error",
                code="invalid_api_key",
            )
        if not token.startswith("sk-admin-") or token in self.revoked_keys:
            return _error(
                401,
                f"Incorrect API key provided: {_masked(token)}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                code="invalid_api_key",
            )
        return None

    # --- query parameters -------------------------------------------------------------------

    def _costs_params(self, request: SandboxRequest) -> Query:
        _reject_unknown(request, COMMON_QUERY)
        if request.param("bucket_width", "1d") != "1d":
            raise BadRequest("Invalid value for 'bucket_width': only '1d' is supported for costs.", "bucket_width")
        return _query(request, groups=COSTS_GROUPS, max_limit=180)

    def _usage_params(self, request: SandboxRequest, kind: str) -> Query:
        _reject_unknown(request, COMMON_QUERY | {"user_ids", "models", "batch", "sources", "sizes"})
        if request.param("bucket_width", "1d") != "1d":
            raise BadRequest("The sandbox serves only bucket_width=1d.", "bucket_width")
        return _query(request, groups=USAGE_KINDS[kind].groups, max_limit=31)

    # --- pages and buckets ------------------------------------------------------------------

    def _page(self, request: SandboxRequest, query: Query, results: Results) -> SandboxResponse:
        cursor = request.param("page")
        offset = _decode_cursor(cursor, query.start) if cursor else 0
        total = _bucket_count(query.start, query.end)
        indexes = range(offset, min(offset + query.limit, total))
        buckets = [self._bucket(query, index, results) for index in indexes]
        has_more = indexes.stop < total
        with self._lock:
            self.results_served.append(sum(len(bucket["results"]) for bucket in buckets))
        body = {
            "object": "page",
            "data": buckets,
            "has_more": has_more,
            "next_page": _encode_cursor(query.start, indexes.stop) if has_more else None,
        }
        return SandboxResponse(200, _json_bytes(body))

    def _bucket(self, query: Query, index: int, results: Results) -> dict[str, Any]:
        start, end = _bucket_bounds(query.start, index)
        day = datetime.fromtimestamp(start, tz=UTC).date()
        # Coverage scales a partial first (or last) day, as a real partial bucket holds less usage.
        covered = Decimal(min(end, query.end) - start) / DAY_SECONDS
        rows = [] if self.is_empty(day) else results(day, covered, query.groups)
        return {"object": "bucket", "start_time": start, "end_time": end, "results": rows}

    def _costs_results(self, day: date, covered: Decimal, groups: frozenset[str]) -> list[dict[str, Any]]:
        totals: dict[tuple[Any, ...], tuple[Decimal, int]] = {}
        for project in PROJECTS:
            for model in MODELS:
                for direction in DIRECTIONS:
                    line_item = f"{model}, {direction}"
                    values = {"project_id": project, "line_item": line_item, "api_key_id": API_KEY_ID}
                    key = tuple(values[name] if name in groups else None for name in COSTS_GROUPS)
                    amount = (self.cost_amount(day, project, line_item) * covered).quantize(MICRO_DOLLAR)
                    tokens = int(self.cost_tokens(day, project, line_item) * covered)
                    old_amount, old_tokens = totals.get(key, (Decimal(0), 0))
                    totals[key] = (old_amount + amount, old_tokens + tokens)
        return [
            self._cost_result(index, dict(zip(COSTS_GROUPS, key, strict=True)), amount, tokens)
            for index, (key, (amount, tokens)) in enumerate(sorted(totals.items(), key=_sort_key))
        ]

    def _cost_result(self, index: int, fields: dict[str, Any], amount: Decimal, tokens: int) -> dict[str, Any]:
        itemized = fields["line_item"] is not None
        value: Decimal | str = str(amount) if self.string_amounts and index % 2 else amount
        return {
            "object": "organization.costs.result",
            "amount": {"value": value, "currency": "usd"},
            **fields,
            # Quantities exist only per line item (spec: "when group_by=line_item").
            "quantity": tokens if itemized else None,
            "quantity_unit": "tokens" if itemized else None,
            "organization_id": ORGANIZATION_ID,
        }

    def _usage_results(self, kind: str) -> Results:
        spec = USAGE_KINDS[kind]

        def results(day: date, covered: Decimal, groups: frozenset[str]) -> list[dict[str, Any]]:
            totals: dict[tuple[Any, ...], dict[str, int]] = {}
            for project in PROJECTS:
                for model in spec.models:
                    values = {**FIXED_GROUP_VALUES, "project_id": project, "model": model}
                    key = tuple(values[name] if name in groups else None for name in spec.groups)
                    sums = totals.setdefault(key, dict.fromkeys((name for name, _, _ in spec.metrics), 0))
                    for name, _, _ in spec.metrics:
                        sums[name] += int(self.usage_value(kind, day, project, model, name) * covered)
            return [
                {
                    "object": f"organization.usage.{spec.result}.result",
                    **sums,
                    **dict(zip(spec.groups, key, strict=True)),
                }
                for key, sums in sorted(totals.items(), key=_sort_key)
            ]

        return results


# --- helpers --------------------------------------------------------------------------------


def _query(request: SandboxRequest, *, groups: tuple[str, ...], max_limit: int) -> Query:
    start = _int_param(request, "start_time", None)
    end = _int_param(request, "end_time", int(datetime.now(UTC).timestamp()))
    limit = _int_param(request, "limit", 7)
    if not 1 <= limit <= max_limit:
        raise BadRequest(f"Invalid value for 'limit': must be between 1 and {max_limit}.", "limit")
    if end <= start:
        raise BadRequest("'end_time' must be after 'start_time'.", "end_time")
    chosen = request.params("group_by")
    unknown = [name for name in chosen if name not in groups]
    if unknown:
        raise BadRequest(f"Invalid value for 'group_by': {unknown[0]!r}; allowed: {', '.join(groups)}.", "group_by")
    return Query(start=start, end=end, limit=limit, groups=frozenset(chosen))


def _int_param(request: SandboxRequest, name: str, default: int | None) -> int:
    text = request.param(name)
    if text is None:
        if default is None:
            raise BadRequest(f"Missing required parameter: '{name}'.", name)
        return default
    try:
        return int(text)
    except ValueError:
        raise BadRequest(f"Invalid value for '{name}': expected an integer.", name) from None


def _reject_unknown(request: SandboxRequest, allowed: set[str]) -> None:
    # Strict on purpose: a connector that sends "group_by[]" (Anthropic's style) must fail loudly.
    unknown = sorted(set(request.query) - allowed)
    if unknown:
        raise BadRequest(f"Unrecognized request argument supplied: {unknown[0]}", unknown[0])


def _bucket_bounds(start: int, index: int) -> tuple[int, int]:
    """The first bucket starts at ``start`` itself (as OpenAI does); the others at UTC midnights."""
    first_end = start - start % DAY_SECONDS + DAY_SECONDS
    if index == 0:
        return start, first_end
    bucket_start = first_end + (index - 1) * DAY_SECONDS
    return bucket_start, bucket_start + DAY_SECONDS


def _bucket_count(start: int, end: int) -> int:
    first_end = start - start % DAY_SECONDS + DAY_SECONDS
    return 1 + max(0, -(-(end - first_end) // DAY_SECONDS))


def _encode_cursor(start: int, offset: int) -> str:
    # Opaque like OpenAI's "page_AAAAAGdGxdEiJdKOAAAAAGcqsYA=", bound to the listing's start_time.
    return "page_" + base64.urlsafe_b64encode(struct.pack(">qq", start, offset)).decode()


def _decode_cursor(cursor: str, start: int) -> int:
    invalid = BadRequest("Invalid value for 'page': not a cursor returned by this listing.", "page")
    if not cursor.startswith("page_"):
        raise invalid
    try:
        cursor_start, offset = struct.unpack(">qq", base64.urlsafe_b64decode(cursor[len("page_") :]))
    except (binascii.Error, struct.error, ValueError):
        raise invalid from None
    if cursor_start != start or offset < 0:
        raise BadRequest("Invalid value for 'page': send the other parameters unchanged when paging.", "page")
    return int(offset)


def _sort_key(item: tuple[tuple[Any, ...], Any]) -> tuple[str, ...]:
    return tuple("" if value is None else str(value) for value in item[0])


def _masked(token: str) -> str:
    return f"{token[:8]}{'*' * 20}{token[-4:]}" if len(token) > 12 else "***"


def _error(
    status: int, message: str, kind: str, *, param: str | None = None, code: str | None = None
) -> SandboxResponse:
    return SandboxResponse(status, {"error": {"message": message, "type": kind, "param": param, "code": code}})


def _json_bytes(value: Any) -> bytes:
    """JSON with Decimals written as exact JSON numbers, as OpenAI sends ``"value": 0.06``: going
    through float would be exact here only by luck of the digits."""
    return _encode(value).encode()


def _encode(value: Any) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(key))}: {_encode(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_encode(item) for item in value) + "]"
    return json.dumps(value)


def iter_days(start: date, end: date) -> Iterable[date]:
    """The days in [start, end), for tests that rebuild the expected rows from the generator."""
    for ordinal in range(start.toordinal(), end.toordinal()):
        yield date.fromordinal(ordinal)

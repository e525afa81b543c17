"""A local Anthropic Admin API: the cost report and the messages usage report (vendor-apis.md §2).

Served as documented: daily buckets ``{"starting_at", "ending_at", "results"}`` oldest first, ``has_more`` and an
opaque ``next_page`` (``page_`` + base64 of the next bucket's start, like the documented example), cost amounts as
decimal strings in **cents**, dimension fields ``null`` unless the request grouped by them (``workspace_id`` is
``null`` for the default workspace even then). Empty days are present with ``results: []``.

Synthetic data is deterministic per seed, day and revision (``restate(day)`` changes only that day). A day is
quiet (an empty bucket) when ``is_quiet(day)`` says so: about one day in six, plus any in ``quiet_days``.

Auth: ``x-api-key`` must start with ``sk-ant-admin`` and not be in ``revoked_keys``, else 401 with Anthropic's
``authentication_error`` JSON; a missing or unknown ``anthropic-version`` header is a 400
``invalid_request_error``, as Anthropic answers it.

Strictness that catches client mistakes: array parameters must use bracket encoding (``group_by[]``); a bare
``group_by`` is a 400. Only ``bucket_width=1d`` is served; ``limit`` is 1 to 31 (default 7).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from providers.sandbox.base import SandboxRequest, SandboxResponse, SandboxVendor

COST_PATH = "/v1/organizations/cost_report"
USAGE_PATH = "/v1/organizations/usage_report/messages"
ADMIN_KEY_PREFIX = "sk-ant-admin"
KNOWN_VERSIONS = frozenset({"2023-01-01", "2023-06-01"})
DEFAULT_LIMIT = 7
MAX_LIMIT = 31

WORKSPACES: tuple[str | None, ...] = (None, "wrkspc_01SbxResearch7Qk2Lm9Np", "wrkspc_01SbxSupport4Hv8Rt1Zx")
MODELS = {"claude-sonnet-4-5": "Claude Sonnet 4.5", "claude-haiku-4-5": "Claude Haiku 4.5"}
API_KEYS = ("apikey_01SbxBackend8Jd3Kw5Yq", "apikey_01SbxBatchJobs2Fp6Ts0Vb")
TOKEN_TYPES = {
    "uncached_input_tokens": "Input Tokens",
    "output_tokens": "Output Tokens",
    "cache_read_input_tokens": "Cache Read Input Tokens",
    "cache_creation.ephemeral_5m_input_tokens": "5m Cache Write Input Tokens",
    "cache_creation.ephemeral_1h_input_tokens": "1h Cache Write Input Tokens",
}

# What a request may group by, and which result fields each grouping fills in.
COST_GROUPINGS = {
    "workspace_id": ("workspace_id",),
    "description": (
        "description",
        "cost_type",
        "token_type",
        "model",
        "service_tier",
        "context_window",
        "inference_geo",
    ),
}
COST_FIELDS = tuple(name for fields in COST_GROUPINGS.values() for name in fields)
USAGE_GROUPINGS = (
    "api_key_id",
    "workspace_id",
    "model",
    "service_tier",
    "context_window",
    "inference_geo",
    "account_id",
    "service_account_id",
)
USAGE_METRICS = (
    "uncached_input_tokens",
    "cache_creation.ephemeral_1h_input_tokens",
    "cache_creation.ephemeral_5m_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
    "server_tool_use.web_search_requests",
)

# A line item before grouping: its dimensions and its summable metrics.
Atom = tuple[dict[str, str | None], dict[str, Decimal]]


class BadRequest(Exception):
    """A request Anthropic would refuse with 400 invalid_request_error."""


@dataclass(frozen=True)
class ReportQuery:
    start: datetime  # floored to UTC midnight
    end: datetime | None
    limit: int
    page: date | None
    group_by: tuple[str, ...]


class AnthropicSandbox(SandboxVendor):
    vendor = "anthropic"

    def __init__(self, *, seed: str = "demo") -> None:
        super().__init__(seed=seed)
        self.quiet_days: set[date] = set()
        self.revoked_keys: set[str] = set()

    # --- knobs and synthetic data -------------------------------------------------------------

    def is_quiet(self, day: date) -> bool:
        # Keyed on the day's text, not the date, so restating a day does not change whether it is quiet.
        return day in self.quiet_days or self.count("quiet", day.isoformat(), low=0, high=6) == 0

    def cost_atoms(self, day: date) -> list[Atom]:
        if self.is_quiet(day):
            return []
        atoms: list[Atom] = []
        for workspace in WORKSPACES:
            for model, model_name in MODELS.items():
                for token_type, label in TOKEN_TYPES.items():
                    cents = self.amount(day, workspace, model, token_type, low="1.00", high="4000.00", places=5)
                    atoms.append(
                        (
                            _cost_dimensions(workspace, model, f"{model_name} Usage - {label}", "tokens", token_type),
                            {"amount": cents},
                        )
                    )
                cents = self.amount(day, workspace, model, "web_search", low="0.00", high="300.00", places=5)
                atoms.append(
                    (_cost_dimensions(workspace, model, "Web Search Usage", "web_search", None), {"amount": cents})
                )
            cents = self.amount(day, workspace, "code_execution", low="0.00", high="150.00", places=5)
            atoms.append(
                (_cost_dimensions(workspace, None, "Code Execution Usage", "code_execution", None), {"amount": cents})
            )
        return atoms

    def usage_atoms(self, day: date) -> list[Atom]:
        if self.is_quiet(day):
            return []
        atoms: list[Atom] = []
        for workspace in WORKSPACES:
            for model in MODELS:
                for api_key in API_KEYS:
                    dimensions: dict[str, str | None] = {
                        "api_key_id": api_key,
                        "workspace_id": workspace,
                        "model": model,
                        "service_tier": "standard",
                        "context_window": "0-200k",
                        "inference_geo": "global",
                        "account_id": None,
                        "service_account_id": None,
                    }
                    metrics = {
                        metric: Decimal(self.count(day, workspace, model, api_key, metric, low=0, high=2_000_000))
                        for metric in USAGE_METRICS
                        if metric != "server_tool_use.web_search_requests"
                    }
                    metrics["server_tool_use.web_search_requests"] = Decimal(
                        self.count(day, workspace, model, api_key, "web_search", low=0, high=40)
                    )
                    atoms.append((dimensions, metrics))
        return atoms

    # --- routing ------------------------------------------------------------------------------

    def route(self, request: SandboxRequest) -> SandboxResponse:
        if request.path not in (COST_PATH, USAGE_PATH):
            return _error(404, "not_found_error", f"Not found: {request.path}")
        if request.method != "GET":
            return _error(405, "invalid_request_error", f"Method {request.method} not allowed")
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        try:
            if request.path == COST_PATH:
                return self._cost_report(request)
            return self._usage_report(request)
        except BadRequest as exc:
            return _error(400, "invalid_request_error", str(exc))

    def _authenticate(self, request: SandboxRequest) -> SandboxResponse | None:
        key = request.headers.get("x-api-key", "")
        if not key.startswith(ADMIN_KEY_PREFIX) or key in self.revoked_keys:
            return _error(401, "authentication_error", "invalid x-api-key")
        version = request.headers.get("anthropic-version")
        if not version:
            return _error(400, "invalid_request_error", "anthropic-version: header is required")
        if version not in KNOWN_VERSIONS:
            return _error(400, "invalid_request_error", f"anthropic-version: unknown version {version!r}")
        return None

    def _cost_report(self, request: SandboxRequest) -> SandboxResponse:
        query = _parse_query(request, allowed_group_by=tuple(COST_GROUPINGS))
        visible = [name for grouping in query.group_by for name in COST_GROUPINGS[grouping]]

        def results(day: date) -> list[dict[str, Any]]:
            return [
                {
                    **{name: dimensions.get(name) for name in COST_FIELDS},
                    "amount": str(metrics["amount"]),
                    "currency": "USD",
                }
                for dimensions, metrics in _aggregate(self.cost_atoms(day), visible)
            ]

        return SandboxResponse(200, _page(query, results))

    def _usage_report(self, request: SandboxRequest) -> SandboxResponse:
        query = _parse_query(request, allowed_group_by=USAGE_GROUPINGS)

        def results(day: date) -> list[dict[str, Any]]:
            return [
                _usage_result(dimensions, metrics)
                for dimensions, metrics in _aggregate(self.usage_atoms(day), query.group_by)
            ]

        return SandboxResponse(200, _page(query, results))


# --- query parsing --------------------------------------------------------------------------


def _parse_query(request: SandboxRequest, *, allowed_group_by: Sequence[str]) -> ReportQuery:
    for bare in ("group_by", "workspace_ids", "models", "api_key_ids", "service_tiers"):
        if bare in request.query:
            raise BadRequest(f"{bare}: array parameters use bracket encoding, e.g. {bare}[]=…")
    starting_at = request.param("starting_at")
    if not starting_at:
        raise BadRequest("starting_at: Field required")
    start = datetime.combine(_parse_time("starting_at", starting_at).date(), time.min, tzinfo=UTC)
    ending_at = request.param("ending_at")
    end = _parse_time("ending_at", ending_at) if ending_at else None
    if end is not None and end <= start:
        raise BadRequest("ending_at must be after starting_at")
    if request.param("bucket_width", "1d") != "1d":
        raise BadRequest("bucket_width: this sandbox serves 1d buckets only")
    group_by = tuple(request.params("group_by[]"))
    unknown = [name for name in group_by if name not in allowed_group_by]
    if unknown:
        raise BadRequest(f"group_by[]: unsupported value(s) {', '.join(unknown)}; use {', '.join(allowed_group_by)}")
    return ReportQuery(start, end, _parse_limit(request.param("limit")), _parse_page(request.param("page")), group_by)


def _parse_time(name: str, text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name}: invalid RFC 3339 datetime {text!r}") from None
    if moment.tzinfo is None:
        raise BadRequest(f"{name}: datetime must carry a time zone")
    return moment.astimezone(UTC)


def _parse_limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise BadRequest(f"limit: must be an integer from 1 to {MAX_LIMIT}")
    return int(text)


def page_token(day: date) -> str:
    """The opaque token of the page starting at ``day``: ``page_`` + base64 of its RFC 3339 start."""
    return "page_" + base64.b64encode(f"{day.isoformat()}T00:00:00Z".encode()).decode()


def _parse_page(token: str | None) -> date | None:
    if token is None:
        return None
    try:
        return date.fromisoformat(base64.b64decode(token.removeprefix("page_"), validate=True).decode()[:10])
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadRequest("page: invalid page token") from None


# --- pages and grouping ---------------------------------------------------------------------


def _bucket_days(query: ReportQuery) -> list[date]:
    """Whole days from the start that end by ``ending_at``, never starting in the future."""
    now = datetime.now(UTC)
    days: list[date] = []
    bucket_start = query.start
    while bucket_start < now and (query.end is None or bucket_start + timedelta(days=1) <= query.end):
        days.append(bucket_start.date())
        bucket_start += timedelta(days=1)
    return days


def _page(query: ReportQuery, results: Callable[[date], list[dict[str, Any]]]) -> dict[str, Any]:
    days = _bucket_days(query)
    first = 0
    if query.page is not None:
        if query.page not in days:
            raise BadRequest("page: the token does not belong to this query")
        first = days.index(query.page)
    shown = days[first : first + query.limit]
    rest = days[first + query.limit :]
    return {
        "data": [
            {
                "starting_at": f"{day.isoformat()}T00:00:00Z",
                "ending_at": f"{(day + timedelta(days=1)).isoformat()}T00:00:00Z",
                "results": results(day),
            }
            for day in shown
        ],
        "has_more": bool(rest),
        "next_page": page_token(rest[0]) if rest else None,
    }


def _aggregate(atoms: Iterable[Atom], visible: Sequence[str]) -> list[Atom]:
    """Sum the atoms' metrics per combination of the visible dimensions; the others become null."""
    groups: dict[tuple[str | None, ...], dict[str, Decimal]] = {}
    for dimensions, metrics in atoms:
        totals = groups.setdefault(tuple(dimensions.get(name) for name in visible), {})
        for name, value in metrics.items():
            totals[name] = totals.get(name, Decimal(0)) + value
    return [(dict(zip(visible, key, strict=True)), totals) for key, totals in groups.items()]


def _cost_dimensions(
    workspace: str | None, model: str | None, description: str, cost_type: str, token_type: str | None
) -> dict[str, str | None]:
    return {
        "workspace_id": workspace,
        "description": description,
        "cost_type": cost_type,
        "token_type": token_type,
        "model": model,
        "service_tier": "standard" if cost_type == "tokens" else None,
        "context_window": "0-200k" if cost_type == "tokens" else None,
        "inference_geo": "global" if model else None,
    }


def _usage_result(dimensions: dict[str, str | None], metrics: dict[str, Decimal]) -> dict[str, Any]:
    def tokens(name: str) -> int:
        return int(metrics[name])

    return {
        **{name: dimensions.get(name) for name in USAGE_GROUPINGS},
        "cache_creation": {
            "ephemeral_1h_input_tokens": tokens("cache_creation.ephemeral_1h_input_tokens"),
            "ephemeral_5m_input_tokens": tokens("cache_creation.ephemeral_5m_input_tokens"),
        },
        "cache_read_input_tokens": tokens("cache_read_input_tokens"),
        "output_tokens": tokens("output_tokens"),
        "server_tool_use": {"web_search_requests": tokens("server_tool_use.web_search_requests")},
        "uncached_input_tokens": tokens("uncached_input_tokens"),
    }


def _error(status: int, kind: str, message: str) -> SandboxResponse:
    return SandboxResponse(status, {"type": "error", "error": {"type": kind, "message": message}})

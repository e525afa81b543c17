"""Anthropic: the Admin API cost report and messages usage report (vendor-apis.md §2).

What it reads:

- Costs: ``GET /v1/organizations/cost_report`` in daily buckets grouped by ``group_by[]=workspace_id`` and
  ``group_by[]=description`` (bracket encoding, as Anthropic documents it). ``amount`` is a decimal string in
  **cents**; it is divided by 100 exactly, so ``"123.78912"`` USD becomes ``Decimal("1.2378912")`` dollars.
  ``service_name`` is the model ("" when Anthropic names none, e.g. code execution), ``charge_description`` the
  line's description (or its cost and token types when the description is missing).
- Usage: ``GET /v1/organizations/usage_report/messages`` grouped by ``model`` and ``workspace_id``; one
  ``UsageRow`` per quantity, with units ``input_tokens`` (uncached input), ``cache_read_input_tokens``,
  ``cache_write_5m_input_tokens``, ``cache_write_1h_input_tokens``, ``output_tokens`` and, when Anthropic reports
  server tools, ``web_search_requests``.
- Balance: Anthropic has no prepaid-balance API, so ``fetch_balance`` raises ``NotSupported``, as every method
  outside a connector's ``capabilities`` does.

Conventions: ``starting_at`` is floored to UTC midnight because buckets are whole UTC days; ``ending_at`` is the
window's end and Anthropic returns the buckets that end by then. ``project`` is the workspace id, or
``"default"`` for the default workspace (which Anthropic reports as null). ``source_key`` is the bucket's day
plus a digest of every dimension Anthropic fills in, so fetching the same bucket again yields the same key;
results that share every dimension are summed into one row. Pages are followed with ``page=<next_page>`` while
``has_more`` is true.

Only Admin keys (``sk-ant-admin01-…``) can read these reports; any other key is refused before a request is sent.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import ClassVar, TypeVar

import httpx

from providers.connectors.base import (
    AccountRef,
    Balance,
    CheckResult,
    CostRow,
    CredentialField,
    CredentialsRejected,
    MalformedPayload,
    NotSupported,
    UsageRow,
    Window,
    register,
)
from providers.connectors.http import VendorHttpClient
from providers.connectors.payload import Payload

VENDOR = "Anthropic"
ANTHROPIC_VERSION = "2023-06-01"
ADMIN_KEY_PREFIX = "sk-ant-admin"
COST_PATH = "/v1/organizations/cost_report"
USAGE_PATH = "/v1/organizations/usage_report/messages"
DEFAULT_WORKSPACE = "default"
ADMIN_KEY_HINT = (
    "use an Admin key (sk-ant-admin01-…) created in the Anthropic Console under Settings → Admin keys by an "
    "organization admin; workspace API keys cannot read cost or usage reports."
)

# Buckets per page. The usage report documents a maximum of 31 daily buckets. The cost report documents no
# maximum, so it asks for 7, the commonly cited default, which any server accepts.
USAGE_BUCKET_LIMIT = 31
COST_BUCKET_LIMIT = 7

# Fields that tell two results of the same bucket apart (null unless the request grouped by them).
COST_DIMENSIONS = (
    "workspace_id",
    "description",
    "cost_type",
    "token_type",
    "model",
    "service_tier",
    "context_window",
    "inference_geo",
    "currency",
)
USAGE_DIMENSIONS = (
    "workspace_id",
    "model",
    "api_key_id",
    "service_tier",
    "context_window",
    "inference_geo",
    "speed",
    "account_id",
    "service_account_id",
)

T = TypeVar("T")


@register
class AnthropicConnector:
    slug: ClassVar[str] = "anthropic"
    display_name: ClassVar[str] = "Anthropic"
    default_api_base: ClassVar[str] = "https://api.anthropic.com"
    credential_fields: ClassVar[tuple[CredentialField, ...]] = (
        CredentialField(
            name="admin_key",
            label="Admin key",
            help="Create an Admin key (sk-ant-admin01-…) in the Anthropic Console → Settings → Admin keys.",
        ),
    )
    capabilities: ClassVar[frozenset[str]] = frozenset({"costs", "usage"})

    def __init__(
        self,
        account: AccountRef,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.account = account
        self.api_base = (account.api_base or self.default_api_base).rstrip("/")
        self._transport = transport
        self._sleep = sleep

    # --- the contract -------------------------------------------------------------------------

    def check_credentials(self) -> CheckResult:
        """Read one day of the cost report: only an organization Admin key can."""
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        params = [
            ("starting_at", _rfc3339(today - timedelta(days=1))),
            ("ending_at", _rfc3339(today)),
            ("bucket_width", "1d"),
            ("limit", "1"),
        ]
        try:
            with self._session() as http:
                http.get_json(COST_PATH, params=params)
        except CredentialsRejected as exc:
            return CheckResult(False, exc.message)
        return CheckResult(True, "Anthropic accepted the Admin key; cost and usage reports are readable.")

    def fetch_costs(self, window: Window) -> list[CostRow]:
        rows: dict[str, CostRow] = {}
        with self._session() as http:
            params = _report_params(window, ("workspace_id", "description"), COST_BUCKET_LIMIT)
            for start, end, result in _results(http, COST_PATH, params):
                row = _cost_row(start, end, result)
                previous = rows.get(row.source_key)
                if previous is not None:
                    row = replace(previous, billed_cost=previous.billed_cost + row.billed_cost)
                rows[row.source_key] = row
        return list(rows.values())

    def fetch_usage(self, window: Window) -> list[UsageRow]:
        rows: dict[str, UsageRow] = {}
        with self._session() as http:
            params = _report_params(window, ("model", "workspace_id"), USAGE_BUCKET_LIMIT)
            for start, end, result in _results(http, USAGE_PATH, params):
                for row in _usage_rows(start, end, result):
                    previous = rows.get(row.source_key)
                    if previous is not None:
                        row = replace(previous, quantity=previous.quantity + row.quantity)
                    rows[row.source_key] = row
        return list(rows.values())

    def fetch_balance(self) -> Balance | None:
        raise NotSupported(
            "Anthropic offers no prepaid-balance API; the ledger tracks this account from recorded purchases "
            "and the reported costs.",
            vendor=VENDOR,
        )

    # --- HTTP ---------------------------------------------------------------------------------

    def _admin_key(self) -> str:
        key = (self.account.credentials.get("admin_key") or "").strip()
        if not key:
            raise CredentialsRejected(
                f"No Anthropic Admin key is saved for this account: {ADMIN_KEY_HINT}", vendor=VENDOR
            )
        if not key.startswith(ADMIN_KEY_PREFIX):
            # Checked locally: a workspace key would only earn a 401 that does not say why.
            raise CredentialsRejected(
                f"The saved key is not an Anthropic Admin key (sk-ant-admin01-…): {ADMIN_KEY_HINT}", vendor=VENDOR
            )
        return key

    @contextmanager
    def _session(self) -> Iterator[VendorHttpClient]:
        http = VendorHttpClient(
            vendor=VENDOR,
            base_url=self.api_base,
            headers={"x-api-key": self._admin_key(), "anthropic-version": ANTHROPIC_VERSION},
            auth_hint=ADMIN_KEY_HINT,
            transport=self._transport,
            sleep=self._sleep,
        )
        try:
            yield http
        finally:
            # A transport passed in belongs to the caller (benches share one); closing our client would close it.
            if self._transport is None:
                http.close()


# --- requests and pages ---------------------------------------------------------------------


def _report_params(window: Window, group_by: Sequence[str], limit: int) -> list[tuple[str, str]]:
    start = window.start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return [
        ("starting_at", _rfc3339(start)),
        ("ending_at", _rfc3339(window.end)),
        ("bucket_width", "1d"),
        *(("group_by[]", dimension) for dimension in group_by),
        ("limit", str(limit)),
    ]


def _pages(http: VendorHttpClient, path: str, params: list[tuple[str, str]]) -> Iterator[Payload]:
    """Every page of a report: the same query again with ``page=<next_page>`` while ``has_more``."""
    page: str | None = None
    seen: set[str] = set()
    while True:
        query = params if page is None else [*params, ("page", page)]
        body = Payload(vendor=VENDOR, endpoint=path, data=http.get_json(path, params=query))
        yield body
        if not body.bool("has_more"):
            return
        page = _required(body.str("next_page"))
        if page in seen:
            # Following a repeated token would loop forever and count its buckets twice.
            raise MalformedPayload(
                f"{VENDOR} {path} returned a page token it had already returned; the sync stops here rather than "
                "count the same buckets twice. Try again later.",
                vendor=VENDOR,
                endpoint=path,
            )
        seen.add(page)


def _results(
    http: VendorHttpClient, path: str, params: list[tuple[str, str]]
) -> Iterator[tuple[datetime, datetime, Payload]]:
    """Each result of each bucket of each page, with the bucket's bounds. Empty buckets yield nothing."""
    for body in _pages(http, path, params):
        for bucket in body.list("data"):
            start, end = bucket.iso_time("starting_at"), bucket.iso_time("ending_at")
            for result in bucket.list("results"):
                yield start, end, result


# --- rows -----------------------------------------------------------------------------------


def _cost_row(start: datetime, end: datetime, result: Payload) -> CostRow:
    cents = _required(result.decimal("amount"))
    currency = _required(result.str("currency")).upper()
    dimensions = {name: result.str(name, optional=True) for name in COST_DIMENSIONS}
    dimensions["currency"] = currency
    return CostRow(
        source_key=_source_key("cost", start, dimensions),
        charge_period_start=start,
        charge_period_end=end,
        # Cents to dollars by moving the decimal point: exact at any precision.
        billed_cost=cents.scaleb(-2),
        billing_currency=currency,
        service_name=dimensions["model"] or "",
        charge_description=_charge_description(dimensions),
        project=dimensions["workspace_id"] or DEFAULT_WORKSPACE,
    )


def _charge_description(dimensions: dict[str, str | None]) -> str:
    description = dimensions["description"]
    if description:
        return description
    parts = [part for part in (dimensions["cost_type"], dimensions["token_type"]) if part]
    return ", ".join(parts) or "Anthropic usage"


def _usage_rows(start: datetime, end: datetime, result: Payload) -> list[UsageRow]:
    dimensions = {name: result.str(name, optional=True) for name in USAGE_DIMENSIONS}
    return [
        UsageRow(
            source_key=_source_key("usage", start, {**dimensions, "unit": unit}),
            charge_period_start=start,
            charge_period_end=end,
            service_name=dimensions["model"] or "",
            quantity=quantity,
            unit=unit,
            project=dimensions["workspace_id"] or DEFAULT_WORKSPACE,
        )
        for unit, quantity in _usage_quantities(result)
    ]


def _usage_quantities(result: Payload) -> list[tuple[str, Decimal]]:
    quantities = [
        ("input_tokens", _required(result.decimal("uncached_input_tokens"))),
        ("cache_read_input_tokens", _required(result.decimal("cache_read_input_tokens"))),
        ("output_tokens", _required(result.decimal("output_tokens"))),
    ]
    cache_creation = result.obj("cache_creation", optional=True)
    if cache_creation is not None:
        quantities += [
            ("cache_write_5m_input_tokens", _required(cache_creation.decimal("ephemeral_5m_input_tokens"))),
            ("cache_write_1h_input_tokens", _required(cache_creation.decimal("ephemeral_1h_input_tokens"))),
        ]
    server_tool_use = result.obj("server_tool_use", optional=True)
    if server_tool_use is not None:
        web_searches = server_tool_use.decimal("web_search_requests", optional=True)
        if web_searches is not None:
            quantities.append(("web_search_requests", web_searches))
    return quantities


def _source_key(kind: str, start: datetime, dimensions: dict[str, str | None]) -> str:
    # A digest keeps the key short however long the descriptions are, and identical for identical buckets.
    text = "|".join(f"{name}={dimensions[name] or ''}" for name in sorted(dimensions))
    digest = hashlib.sha256(text.encode()).hexdigest()[:32]
    return f"anthropic:{kind}:{start.date().isoformat()}:{digest}"


# --- small helpers --------------------------------------------------------------------------


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _required(value: T | None) -> T:
    # Payload's non-optional readers already raise on a missing field; this only narrows the type.
    assert value is not None
    return value

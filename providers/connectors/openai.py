"""OpenAI: the organization Costs API and Usage API (vendor-apis.md §1), read with an admin key.

Costs arrive as daily buckets grouped by line item and project; usage arrives per endpoint, grouped
by model and project. OpenAI offers no supported balance API, so the ledger tracks the balance itself
(top-ups minus the costs read here).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import httpx

from providers.connectors.base import (
    AccountRef,
    Balance,
    CheckResult,
    CostRow,
    CredentialField,
    CredentialsRejected,
    CreditsExhausted,
    MalformedPayload,
    UsageRow,
    Window,
    register,
)
from providers.connectors.http import VendorHttpClient
from providers.connectors.payload import Payload

VENDOR = "OpenAI"
ADMIN_KEYS_URL = "https://platform.openai.com/settings/organization/admin-keys"
ADMIN_KEY_PREFIX = "sk-admin-"
ADMIN_KEY_HINT = f"use a current OpenAI admin key (sk-admin-…), not a project key; create one at {ADMIN_KEYS_URL}"
COSTS_PATH = "/organization/costs"
USAGE_PATH = "/organization/usage/{endpoint}"
# Buckets per page: 31 is the most the usage endpoints accept for 1d buckets; costs use the same.
PAGE_LIMIT = 31
# A cursor that never ends is a vendor bug, not a reason to loop forever.
MAX_PAGES = 1000


@dataclass(frozen=True)
class Metric:
    """One numeric field of a usage result and the unit its UsageRow carries."""

    field: str
    unit: str
    required: bool = True


REQUESTS = Metric("num_model_requests", "requests")
# Only the fields the spec marks required are required: real buckets omit the newer token fields.
USAGE_METRICS: dict[str, tuple[Metric, ...]] = {
    "completions": (
        Metric("input_tokens", "input_tokens"),
        Metric("output_tokens", "output_tokens"),
        Metric("input_cached_tokens", "input_cached_tokens", required=False),
        REQUESTS,
    ),
    "embeddings": (Metric("input_tokens", "input_tokens"), REQUESTS),
    "moderations": (Metric("input_tokens", "input_tokens"), REQUESTS),
    "images": (Metric("images", "images"), REQUESTS),
    "audio_speeches": (Metric("characters", "characters"), REQUESTS),
    "audio_transcriptions": (Metric("seconds", "seconds"), REQUESTS),
}


@register
class OpenAIConnector:
    slug: ClassVar[str] = "openai"
    display_name: ClassVar[str] = VENDOR
    default_api_base: ClassVar[str] = "https://api.openai.com/v1"
    credential_fields: ClassVar[tuple[CredentialField, ...]] = (
        CredentialField("admin_key", "Admin key", f"Create an admin key (sk-admin-…) at {ADMIN_KEYS_URL}"),
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
        self.api_base = account.api_base or self.default_api_base
        self._transport = transport
        self._sleep = sleep
        self._client: VendorHttpClient | None = None

    # --- the Connector protocol -------------------------------------------------------------

    def check_credentials(self) -> CheckResult:
        """One single-bucket costs request for the last day: cheap, and it needs exactly the
        permission the sync needs."""
        now = datetime.now(UTC)
        params = _time_params(Window(now - timedelta(days=1), now), limit=1)
        try:
            self._http().get_json(COSTS_PATH, params=params, endpoint=COSTS_PATH)
        except CredentialsRejected as exc:
            return CheckResult(ok=False, message=exc.message)
        return CheckResult(ok=True, message="OpenAI accepted the admin key; the organization's costs are readable.")

    def fetch_costs(self, window: Window) -> list[CostRow]:
        params = [*_time_params(window), ("group_by", "line_item"), ("group_by", "project_id")]
        rows: dict[str, CostRow] = {}
        for bucket in self._buckets(COSTS_PATH, params):
            start, end = bucket.unix_time("start_time"), bucket.unix_time("end_time")
            for result in bucket.list("results"):
                _add_unique(rows, _cost_row(result, start, end), COSTS_PATH)
        return list(rows.values())

    def fetch_usage(self, window: Window) -> list[UsageRow]:
        params = [*_time_params(window), ("group_by", "model"), ("group_by", "project_id")]
        rows: dict[str, UsageRow] = {}
        for endpoint, metrics in USAGE_METRICS.items():
            path = USAGE_PATH.format(endpoint=endpoint)
            for bucket in self._buckets(path, params):
                start, end = bucket.unix_time("start_time"), bucket.unix_time("end_time")
                for result in bucket.list("results"):
                    for row in _usage_rows(endpoint, metrics, result, start, end):
                        _add_unique(rows, row, path)
        return list(rows.values())

    def fetch_balance(self) -> Balance | None:
        # No supported balance endpoint exists (vendor-apis.md §1.7): the ledger computes it.
        return None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # --- HTTP -----------------------------------------------------------------------------

    def _http(self) -> VendorHttpClient:
        if self._client is None:
            self._client = VendorHttpClient(
                vendor=self.display_name,
                base_url=self.api_base,
                headers={"Authorization": f"Bearer {self._admin_key()}"},
                auth_hint=ADMIN_KEY_HINT + ".",
                transport=self._transport,
                sleep=self._sleep,
                classify=_classify,
            )
        return self._client

    def _admin_key(self) -> str:
        """The admin key, refused before any request when it cannot work: OpenAI answers a project
        key with a bare 401, so saying why here saves the user a support round-trip."""
        key = (self.account.credentials.get("admin_key") or "").strip()
        if not key:
            raise self._rejected(f"No OpenAI admin key is set: {ADMIN_KEY_HINT}.")
        if key.startswith("sk-") and not key.startswith(ADMIN_KEY_PREFIX):
            raise self._rejected(
                "OpenAI's Costs and Usage APIs need an admin key; this is a project or user API key "
                f"(sk-proj-…, sk-…): {ADMIN_KEY_HINT}."
            )
        # httpx would otherwise fail while encoding the header, with the key in its error text.
        if not key.isascii() or not key.isprintable() or any(char.isspace() for char in key):
            raise self._rejected(
                "The OpenAI admin key contains spaces, line breaks or non-ASCII characters: copy it again "
                f"from {ADMIN_KEYS_URL}."
            )
        return key

    def _rejected(self, message: str) -> CredentialsRejected:
        return CredentialsRejected(message, vendor=self.display_name)

    def _buckets(self, path: str, params: list[tuple[str, str]]) -> Iterator[Payload]:
        """Every bucket of every page, following ``next_page`` with the same other parameters."""
        client = self._http()
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            page_params = [*params, ("page", cursor)] if cursor else params
            page = Payload(vendor=self.display_name, endpoint=path, data=client.get_json(path, params=page_params))
            yield from page.list("data")
            cursor = page.str("next_page", optional=True)
            # The cookbook loops on next_page alone; has_more false also ends the listing.
            if not cursor or page.bool("has_more", optional=True) is False:
                return
            if cursor in seen:
                raise self._malformed(path, "returned the same next_page cursor twice")
            seen.add(cursor)
        raise self._malformed(path, f"kept returning pages after {MAX_PAGES} requests")

    def _malformed(self, path: str, problem: str) -> MalformedPayload:
        return MalformedPayload(
            f"{self.display_name} {path} {problem}; the sync stopped without writing anything and will be retried.",
            vendor=self.display_name,
            endpoint=path,
        )


# --- request parameters ---------------------------------------------------------------------


def _time_params(window: Window, *, limit: int = PAGE_LIMIT) -> list[tuple[str, str]]:
    """Start at UTC midnight so every bucket is a whole day: OpenAI starts the first bucket at
    ``start_time`` itself, and a partial day would be overwritten later by the full one anyway."""
    start = window.start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return [
        ("start_time", str(int(start.timestamp()))),
        ("end_time", str(math.ceil(window.end.timestamp()))),
        ("bucket_width", "1d"),
        ("limit", str(limit)),
    ]


# --- mapping results to rows ------------------------------------------------------------------


def _cost_row(result: Payload, start: datetime, end: datetime) -> CostRow:
    amount = result.obj("amount")
    assert amount is not None  # obj() without optional never returns None
    value = amount.decimal("value")
    currency = amount.str("currency")
    assert value is not None and currency is not None
    line_item = result.str("line_item", optional=True) or ""
    project = result.str("project_id", optional=True) or ""
    return CostRow(
        source_key=f"cost:{start.date().isoformat()}:{project}:{line_item}",
        charge_period_start=start,
        charge_period_end=end,
        billed_cost=value,
        billing_currency=currency.upper(),
        service_name=_model_of(line_item),
        charge_description=line_item,
        project=project,
        consumed_quantity=result.decimal("quantity", optional=True),
        consumed_unit=result.str("quantity_unit", optional=True) or "",
    )


def _model_of(line_item: str) -> str:
    """The model of a line item: "gpt-4o-2024-08-06, input" -> "gpt-4o-2024-08-06"."""
    return line_item.split(",", 1)[0].strip()


def _usage_rows(
    endpoint: str, metrics: tuple[Metric, ...], result: Payload, start: datetime, end: datetime
) -> Iterator[UsageRow]:
    model = result.str("model", optional=True) or ""
    project = result.str("project_id", optional=True) or ""
    day = start.date().isoformat()
    for metric in metrics:
        quantity = result.decimal(metric.field, optional=not metric.required)
        if quantity is None:
            continue
        yield UsageRow(
            source_key=f"usage:{endpoint}:{day}:{project}:{model}:{metric.unit}",
            charge_period_start=start,
            charge_period_end=end,
            service_name=model,
            quantity=quantity,
            unit=metric.unit,
            project=project,
        )


def _add_unique(rows: dict[str, Any], row: CostRow | UsageRow, path: str) -> None:
    """Two results with one key would make the later silently replace the earlier: refuse instead."""
    if row.source_key in rows:
        raise MalformedPayload(
            f"{VENDOR} {path} returned the same bucket and grouping twice ({row.source_key}); the sync stopped "
            "so that nothing is counted twice, and will be retried.",
            vendor=VENDOR,
            endpoint=path,
        )
    rows[row.source_key] = row


# --- vendor-specific errors -----------------------------------------------------------------


def _classify(response: httpx.Response, endpoint: str) -> Exception | None:
    """OpenAI answers 429 both for rate limits (retry later) and for exhausted prepaid credits
    (``insufficient_quota``), which no retry can fix."""
    if response.status_code != 429:
        return None
    error = _error_object(response)
    if "insufficient_quota" not in (error.get("type"), error.get("code")):
        return None
    return CreditsExhausted(
        "OpenAI says the organization's prepaid credits are exhausted (insufficient_quota): buy credits "
        "(top up) in the OpenAI organization's billing settings, then sync again.",
        vendor=VENDOR,
        endpoint=endpoint,
    )


def _error_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}

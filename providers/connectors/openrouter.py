"""OpenRouter: credits and per-day activity, read with a management key (vendor-apis.md §3).

What it reads:

- Balance: ``GET /credits`` -> ``total_credits - total_usage`` in USD; both totals are kept in ``details``.
- Costs: ``GET /activity?date=YYYY-MM-DD``, one request per UTC day. OpenRouter only serves the last 30
  **completed** UTC days, so days of the window before that range, and today (not complete yet), are skipped
  without a request; a window wholly outside the range returns ``[]``. A day belongs to the window when it
  overlaps it (the window's start is floored to UTC midnight, as for the other daily-bucket vendors).
  One ``CostRow`` per activity item: ``billed_cost`` is ``usage`` (USD of OpenRouter credits spent; BYOK inference
  billed by the upstream provider is not OpenRouter's charge and is left out), ``service_name`` the model,
  ``charge_description`` "<provider> via OpenRouter", ``project`` "".
- Usage: the same activity items as ``UsageRow``s with units ``input_tokens`` (``prompt_tokens``),
  ``output_tokens`` (``completion_tokens``), ``reasoning_tokens`` and ``requests``.

``source_key`` is ``openrouter:<date>:<model_permaslug>:<endpoint_id>`` (plus ``:<unit>`` for usage), so fetching
the same day again yields the same keys; items sharing a key are summed.

Both endpoints need a **management key** (https://openrouter.ai/settings/management-keys): OpenRouter answers 403
to an ordinary inference key, reported as ``CredentialsRejected`` saying so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
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
    UsageRow,
    Window,
    register,
)
from providers.connectors.http import VendorHttpClient
from providers.connectors.payload import Payload

VENDOR = "OpenRouter"
CREDITS_PATH = "/credits"
ACTIVITY_PATH = "/activity"
MANAGEMENT_KEYS_URL = "https://openrouter.ai/settings/management-keys"
ACTIVITY_DAYS = 30  # OpenRouter keeps activity for the last 30 completed UTC days
AUTH_HINT = (
    f"check that the management key was copied whole and is still active, or create one at {MANAGEMENT_KEYS_URL}."
)
# OpenRouter's activity fields and the units this project records them under.
USAGE_UNITS = (
    ("prompt_tokens", "input_tokens"),
    ("completion_tokens", "output_tokens"),
    ("reasoning_tokens", "reasoning_tokens"),
    ("requests", "requests"),
)

T = TypeVar("T")


@register
class OpenRouterConnector:
    slug: ClassVar[str] = "openrouter"
    display_name: ClassVar[str] = "OpenRouter"
    default_api_base: ClassVar[str] = "https://openrouter.ai/api/v1"
    credential_fields: ClassVar[tuple[CredentialField, ...]] = (
        CredentialField(
            name="management_key",
            label="Management key",
            help=(
                f"Create a management key at {MANAGEMENT_KEYS_URL}; ordinary API keys cannot read credits or activity."
            ),
        ),
    )
    capabilities: ClassVar[frozenset[str]] = frozenset({"costs", "usage", "balance"})

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
        """Read the credits: only a management key can."""
        try:
            self.fetch_balance()
        except CredentialsRejected as exc:
            return CheckResult(False, exc.message)
        return CheckResult(True, "OpenRouter accepted the management key; credits and activity are readable.")

    def fetch_balance(self) -> Balance:
        with self._session() as http:
            body = Payload(vendor=VENDOR, endpoint=CREDITS_PATH, data=http.get_json(CREDITS_PATH))
        data = _required(body.obj("data"))
        total_credits = _required(data.decimal("total_credits"))
        total_usage = _required(data.decimal("total_usage"))
        return Balance(
            amount=total_credits - total_usage,
            currency="USD",
            observed_at=datetime.now(UTC),
            details={"total_credits": total_credits, "total_usage": total_usage},
        )

    def fetch_costs(self, window: Window) -> list[CostRow]:
        rows: dict[str, CostRow] = {}
        for item in self._activity(window):
            row = _cost_row(item)
            previous = rows.get(row.source_key)
            if previous is not None:
                row = replace(previous, billed_cost=previous.billed_cost + row.billed_cost)
            rows[row.source_key] = row
        return list(rows.values())

    def fetch_usage(self, window: Window) -> list[UsageRow]:
        rows: dict[str, UsageRow] = {}
        for item in self._activity(window):
            for row in _usage_rows(item):
                previous = rows.get(row.source_key)
                if previous is not None:
                    row = replace(previous, quantity=previous.quantity + row.quantity)
                rows[row.source_key] = row
        return list(rows.values())

    # --- HTTP ---------------------------------------------------------------------------------

    def _activity(self, window: Window) -> Iterator[Payload]:
        """The activity items of every day of the window that OpenRouter still serves."""
        days = activity_days(window, today=datetime.now(UTC).date())
        if not days:
            return
        with self._session() as http:
            for day in days:
                data = http.get_json(ACTIVITY_PATH, params={"date": day.isoformat()})
                yield from Payload(vendor=VENDOR, endpoint=ACTIVITY_PATH, data=data).list("data")

    def _management_key(self) -> str:
        key = (self.account.credentials.get("management_key") or "").strip()
        if not key:
            raise CredentialsRejected(
                f"No OpenRouter management key is saved for this account: {AUTH_HINT}", vendor=VENDOR
            )
        return key

    @contextmanager
    def _session(self) -> Iterator[VendorHttpClient]:
        http = VendorHttpClient(
            vendor=VENDOR,
            base_url=self.api_base,
            headers={"Authorization": f"Bearer {self._management_key()}"},
            auth_hint=AUTH_HINT,
            transport=self._transport,
            sleep=self._sleep,
            classify=_classify,
        )
        try:
            yield http
        finally:
            # A transport passed in belongs to the caller (benches share one); closing our client would close it.
            if self._transport is None:
                http.close()


def activity_days(window: Window, *, today: date) -> list[date]:
    """The UTC days overlapping ``window`` that lie within the last 30 completed days before ``today``."""
    first = max(window.start.astimezone(UTC).date(), today - timedelta(days=ACTIVITY_DAYS))
    # The window's end is exclusive: a window ending at midnight does not touch the day that starts then.
    last = min((window.end.astimezone(UTC) - timedelta(microseconds=1)).date(), today - timedelta(days=1))
    return [first + timedelta(days=offset) for offset in range((last - first).days + 1)]


def _classify(response: httpx.Response, endpoint: str) -> Exception | None:
    # OpenRouter answers 403 to a valid inference key on management endpoints: say which key is needed.
    if response.status_code == 403:
        return CredentialsRejected(
            f"OpenRouter refused the key at {endpoint} (403): reading credits and activity needs a management key, "
            f"not an inference API key. Create one at {MANAGEMENT_KEYS_URL} and save it for this account.",
            vendor=VENDOR,
            endpoint=endpoint,
        )
    return None


# --- rows -----------------------------------------------------------------------------------


def _item_day(item: Payload) -> date:
    text = _required(item.str("date"))
    try:
        # The spec gives YYYY-MM-DD; a time suffix, should one appear, does not change the day.
        return date.fromisoformat(text[:10])
    except ValueError:
        raise MalformedPayload(
            f"{VENDOR} {ACTIVITY_PATH} returned an unexpected payload: field '{item.path}.date' should be a "
            f"YYYY-MM-DD date, got {text[:40]!r}.",
            vendor=VENDOR,
            endpoint=ACTIVITY_PATH,
        ) from None


def _item_key(item: Payload, day: date) -> str:
    permaslug = _required(item.str("model_permaslug"))
    endpoint_id = _required(item.str("endpoint_id"))
    return f"openrouter:{day.isoformat()}:{permaslug}:{endpoint_id}"


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, clock_time.min, tzinfo=UTC)
    return start, start + timedelta(days=1)


def _cost_row(item: Payload) -> CostRow:
    day = _item_day(item)
    start, end = _day_bounds(day)
    return CostRow(
        source_key=_item_key(item, day),
        charge_period_start=start,
        charge_period_end=end,
        billed_cost=_required(item.decimal("usage")),
        billing_currency="USD",
        service_name=_required(item.str("model")),
        charge_description=f"{_required(item.str('provider_name'))} via OpenRouter",
        project="",
    )


def _usage_rows(item: Payload) -> list[UsageRow]:
    day = _item_day(item)
    start, end = _day_bounds(day)
    key = _item_key(item, day)
    model = _required(item.str("model"))
    return [
        UsageRow(
            source_key=f"{key}:{unit}",
            charge_period_start=start,
            charge_period_end=end,
            service_name=model,
            quantity=_required(item.decimal(field_name)),
            unit=unit,
            project="",
        )
        for field_name, unit in USAGE_UNITS
    ]


def _required(value: T | None) -> T:
    # Payload's non-optional readers already raise on a missing field; this only narrows the type.
    assert value is not None
    return value

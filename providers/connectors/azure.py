"""Azure OpenAI costs through the Azure Cost Management Query API (vendor-apis.md §5).

Azure bills Azure OpenAI like any other resource, so spend is read from Cost Management, not
from the OpenAI endpoints: a service principal gets an Azure AD token with the
client-credentials grant, then POSTs a ``QueryDefinition`` for daily ``ActualCost`` restricted to
the Azure OpenAI services. The answer is a table: rows are positional in ``columns`` order and
that order varies, so every value is read by column name.

Usage (token counts) is not available from Cost Management: ``fetch_usage`` raises
``NotSupported``; Azure reports no prepaid balance, so ``fetch_balance`` returns ``None``.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

import httpx

from aggregator.money import CurrencyError, currency_code
from providers.connectors.base import (
    AccountRef,
    Balance,
    CheckResult,
    ConnectorError,
    CostRow,
    CredentialField,
    CredentialsRejected,
    MalformedPayload,
    NotSupported,
    TransientVendorError,
    UsageRow,
    Window,
    register,
)
from providers.connectors.http import DEFAULT_TIMEOUT, VendorHttpClient, retry_after_seconds
from providers.connectors.payload import Payload

logger = logging.getLogger(__name__)

VENDOR = "azure_openai"
QUERY_ENDPOINT = "Microsoft.CostManagement/query"
AAD_ENDPOINT = "Azure AD token"
DEFAULT_AAD_URL = "https://login.microsoftonline.com/{tenant_id}/oauth2/v2.0/token"
MANAGEMENT_SCOPE = "https://management.azure.com/.default"

AUTH_HINT = (
    "check that the app registration's client secret is current (paste the secret's Value, not its Secret ID) "
    "and that the app has the Cost Management Reader role on the subscription (Access control (IAM))."
)

# Cost columns Azure may name, in order of preference. ``Cost``/``PreTaxCost`` are in the billing
# currency given by the ``Currency`` column; ``CostUSD`` is always US dollars.
COST_COLUMNS = ("Cost", "PreTaxCost", "CostUSD")
USD_COST_COLUMN = "CostUSD"
DATE_COLUMN = "UsageDate"
CURRENCY_COLUMN = "Currency"
# Dimension columns that name the model/offering and the resource, most specific first.
SERVICE_COLUMNS = ("MeterSubCategory", "ServiceName")
PROJECT_COLUMNS = ("ResourceId", "ResourceGroup", "ResourceGroupName")

# A Window shorter than this cannot be expressed with Azure's inclusive, second-precision ``to``.
_ONE_SECOND = timedelta(seconds=1)
# Refresh the token this long before Azure AD says it expires, so no request carries a stale one.
_TOKEN_MARGIN_SECONDS = 300.0
# A runaway nextLink chain is a vendor bug; stop long before it exhausts memory.
MAX_PAGES = 1000


@dataclass(frozen=True)
class _Token:
    value: str
    expires_at: float  # on the connector's monotonic clock


@dataclass(frozen=True)
class _ColumnMap:
    """Where each needed value sits in a row, found by column name (case-insensitive)."""

    cost: int
    cost_name: str
    date: int
    currency: int | None  # None when the cost column is CostUSD
    dimensions: tuple[tuple[str, int], ...]  # every other column, sorted by name


@register
class AzureOpenAIConnector:
    slug: ClassVar[str] = VENDOR
    display_name: ClassVar[str] = "Azure OpenAI"
    default_api_base: ClassVar[str] = "https://management.azure.com"
    capabilities: ClassVar[frozenset[str]] = frozenset({"costs"})
    credential_fields: ClassVar[tuple[CredentialField, ...]] = (
        CredentialField(
            "tenant_id",
            "Directory (tenant) ID",
            "Microsoft Entra ID > App registrations > your app > Overview.",
            secret=False,
        ),
        CredentialField(
            "client_id", "Application (client) ID", "The same Overview page of the app registration.", secret=False
        ),
        CredentialField(
            "client_secret",
            "Client secret value",
            "App registration > Certificates & secrets > New client secret; "
            "copy its Value (shown once), not the Secret ID.",
        ),
        CredentialField(
            "subscription_id",
            "Subscription ID",
            "The subscription holding the Azure OpenAI resources. Give the app the Cost Management Reader role on it.",
            secret=False,
        ),
        CredentialField(
            "token_url",
            "Token URL (optional)",
            "Leave empty for Azure's public cloud (https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token).",
            secret=False,
            required=False,
        ),
    )

    API_VERSION: ClassVar[str] = "2025-03-01"
    # Azure OpenAI spend appears under these ServiceName values. The exact strings are
    # [UNCONFIRMED] (vendor-apis.md §5): Azure has used "Cognitive Services" and moved AI models to
    # "Foundry Models"; widen this list if a customer's Cost analysis shows another name.
    SERVICE_NAMES: ClassVar[tuple[str, ...]] = ("Cognitive Services", "Azure OpenAI", "Foundry Models")
    # Two groupings (Azure's maximum): the resource (one per Azure OpenAI account, our "project")
    # and the meter subcategory (the offering, our "service").
    GROUPING: ClassVar[tuple[str, ...]] = ("ResourceId", "MeterSubCategory")
    DEFAULT_SERVICE_NAME: ClassVar[str] = "Azure OpenAI"

    def __init__(
        self,
        account: AccountRef,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.account = account
        self.api_base = (account.api_base or self.default_api_base).rstrip("/")
        self._transport = transport
        self._sleep = sleep
        self._clock = clock
        self._token: _Token | None = None
        self._query_client: VendorHttpClient | None = None
        self._token_client = httpx.Client(timeout=DEFAULT_TIMEOUT, transport=transport, follow_redirects=False)

    def close(self) -> None:
        self._token_client.close()
        if self._query_client is not None:
            self._query_client.close()

    # --- the contract ---------------------------------------------------------------------------

    def check_credentials(self) -> CheckResult:
        """Get a token and run a one-day query, which proves both the secret and the role."""
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        try:
            self.fetch_costs(Window(today - timedelta(days=1), today))
        except ConnectorError as exc:
            return CheckResult(ok=False, message=exc.message)
        return CheckResult(
            ok=True,
            message=f"Azure accepted the service principal and Cost Management answered for subscription "
            f"{self._credential('subscription_id')}.",
        )

    def fetch_costs(self, window: Window) -> list[CostRow]:
        body = self._query_body(window)
        path: str | None = (
            f"/subscriptions/{quote(self._credential('subscription_id'), safe='')}"
            f"/providers/Microsoft.CostManagement/query?api-version={self.API_VERSION}"
        )
        seen: set[str] = set()
        rows: list[CostRow] = []
        while path is not None:
            if len(seen) >= MAX_PAGES:
                raise MalformedPayload(
                    f"{VENDOR} {QUERY_ENDPOINT} kept returning nextLink after {MAX_PAGES} pages; "
                    "sync a shorter window.",
                    vendor=VENDOR,
                    endpoint=QUERY_ENDPOINT,
                )
            seen.add(path)
            data = self._client().request_json("POST", path, json_body=body, endpoint=QUERY_ENDPOINT)
            if data is None:  # 204 No Content: nothing was billed in the window
                break
            properties = Payload(vendor=VENDOR, endpoint=QUERY_ENDPOINT, data=data).obj("properties")
            assert properties is not None
            rows.extend(_page_rows(properties, window, default_service=self.DEFAULT_SERVICE_NAME))
            path = self._next_path(properties.str("nextLink", optional=True), seen)
        return _merge_same_keys(rows)

    def fetch_usage(self, window: Window) -> list[UsageRow]:
        raise NotSupported(
            "Azure Cost Management reports Azure OpenAI costs, not token counts; usage is not available "
            "for this account (capabilities: costs).",
            vendor=VENDOR,
            endpoint=QUERY_ENDPOINT,
        )

    def fetch_balance(self) -> Balance | None:
        return None  # Azure bills in arrears; there is no prepaid balance to read.

    # --- the query ------------------------------------------------------------------------------

    def _query_body(self, window: Window) -> dict[str, Any]:
        start = window.start.astimezone(UTC)
        # Azure's ``to`` is inclusive (its example ends at 23:59:59); our window's end is exclusive.
        last = max(start, window.end.astimezone(UTC) - _ONE_SECOND)
        return {
            "type": "ActualCost",
            "timeframe": "Custom",
            "timePeriod": {"from": _rfc3339(start), "to": _rfc3339(last)},
            "dataset": {
                "granularity": "Daily",
                "aggregation": {"totalCost": {"name": "Cost", "function": "Sum"}},
                "grouping": [{"type": "Dimension", "name": name} for name in self.GROUPING],
                "filter": {"dimensions": {"name": "ServiceName", "operator": "In", "values": list(self.SERVICE_NAMES)}},
            },
        }

    def _next_path(self, next_link: str | None, seen: set[str]) -> str | None:
        """The next page's path and query, sent to our own API base.

        Only the path and query of ``nextLink`` are kept, so the bearer token never leaves the
        configured host even if a link names another one (a proxy or sandbox serves the same paths).
        """
        if not next_link:
            return None
        parts = urlsplit(next_link)
        if not parts.path.startswith("/"):
            raise MalformedPayload(
                f"{VENDOR} {QUERY_ENDPOINT} returned a nextLink that is not a URL ({next_link[:80]!r}).",
                vendor=VENDOR,
                endpoint=QUERY_ENDPOINT,
            )
        path = f"{parts.path}?{parts.query}" if parts.query else parts.path
        if path in seen:
            raise MalformedPayload(
                f"{VENDOR} {QUERY_ENDPOINT} returned the same nextLink twice, so its paging looped; "
                "try the sync again later.",
                vendor=VENDOR,
                endpoint=QUERY_ENDPOINT,
            )
        return path

    def _client(self) -> VendorHttpClient:
        """The query client, rebuilt with a fresh bearer token when the current one is about to expire."""
        token = self._token
        if self._query_client is None or token is None or self._clock() >= token.expires_at - _TOKEN_MARGIN_SECONDS:
            token = self._token = self._fetch_token()
            if self._query_client is not None:
                self._query_client.close()
            self._query_client = VendorHttpClient(
                vendor=VENDOR,
                base_url=self.api_base,
                headers={"Authorization": f"Bearer {token.value}"},
                auth_hint=AUTH_HINT,
                transport=self._transport,
                sleep=self._sleep,
            )
        return self._query_client

    # --- the service principal's token ----------------------------------------------------------

    def _credential(self, name: str) -> str:
        value = (self.account.credentials.get(name) or "").strip()
        if not value:
            label = next(f.label for f in self.credential_fields if f.name == name)
            raise CredentialsRejected(
                f"{self.display_name} needs the {label} ({name}); add it to the linked account.",
                vendor=VENDOR,
            )
        return value

    def _token_url(self) -> str:
        url = (self.account.credentials.get("token_url") or "").strip()
        if not url:
            return DEFAULT_AAD_URL.format(tenant_id=quote(self._credential("tenant_id"), safe=""))
        parts = urlsplit(url)
        # The client secret is sent to this address: plain http only to this machine (sandboxes).
        if parts.scheme != "https" and not (parts.scheme == "http" and _is_loopback(parts.hostname)):
            raise CredentialsRejected(
                f"{self.display_name} token_url must be an https:// address (got scheme {parts.scheme or 'none'!r}); "
                "leave it empty for Azure's public cloud.",
                vendor=VENDOR,
                endpoint=AAD_ENDPOINT,
            )
        return url

    def _fetch_token(self) -> _Token:
        """Client-credentials grant. Form-encoded, which VendorHttpClient (JSON only) does not send;
        retries 429/5xx/timeouts like it does, honoring Retry-After."""
        url = self._token_url()
        form = {
            "grant_type": "client_credentials",
            "client_id": self._credential("client_id"),
            "client_secret": self._credential("client_secret"),
            "scope": MANAGEMENT_SCOPE,
        }
        attempts = 4
        last_error = ""
        for attempt in range(1, attempts + 1):
            retry_after: str | None = None
            try:
                response = self._token_client.post(url, data=form)
            except httpx.TimeoutException:
                last_error = "timed out"
            except httpx.TransportError as exc:
                last_error = f"could not connect ({type(exc).__name__})"
            else:
                if response.status_code != 429 and response.status_code < 500:
                    return self._read_token(response)
                last_error = f"answered HTTP {response.status_code}"
                retry_after = response.headers.get("Retry-After")
            if attempt < attempts:
                self._sleep(retry_after_seconds(retry_after, default=float(2 ** (attempt - 1))))
        raise TransientVendorError(
            f"{VENDOR} {AAD_ENDPOINT} {last_error} after {attempts} attempts; the sync will be retried later.",
            vendor=VENDOR,
            endpoint=AAD_ENDPOINT,
        )

    def _read_token(self, response: httpx.Response) -> _Token:
        body = _json_object(response)
        if response.status_code >= 400:
            raise _token_refusal(response.status_code, body)
        payload = Payload(vendor=VENDOR, endpoint=AAD_ENDPOINT, data=body)
        value = payload.str("access_token")
        assert value is not None
        # Azure AD v2 sends expires_in as a number, v1 as a string; an hour is its usual lifetime.
        expires_in = payload.decimal("expires_in", optional=True)
        lifetime = float(expires_in) if expires_in is not None else 3600.0
        return _Token(value=value, expires_at=self._clock() + lifetime)


# --- reading the table ------------------------------------------------------------------------


def _page_rows(properties: Payload, window: Window, *, default_service: str) -> list[CostRow]:
    columns = _column_map(properties)
    rows: list[CostRow] = []
    for row in properties.list("rows"):
        cost_row = _cost_row(row, columns, default_service=default_service)
        # Daily buckets overlap a window that does not start at midnight; keep exactly those.
        if cost_row.charge_period_end > window.start and cost_row.charge_period_start < window.end:
            rows.append(cost_row)
        else:
            logger.warning(
                "%s: dropped a row for %s outside the requested window", VENDOR, cost_row.charge_period_start.date()
            )
    return rows


def _column_map(properties: Payload) -> _ColumnMap:
    names: dict[str, tuple[str, int]] = {}
    for index, column in enumerate(properties.list("columns")):
        name = column.str("name")
        assert name is not None
        names.setdefault(name.lower(), (name, index))

    def find(candidates: Sequence[str]) -> tuple[str, int] | None:
        return next((names[c.lower()] for c in candidates if c.lower() in names), None)

    cost = find(COST_COLUMNS)
    if cost is None:
        raise _missing_column(" or ".join(COST_COLUMNS), names)
    date = find([DATE_COLUMN])
    if date is None:
        raise _missing_column(DATE_COLUMN, names)
    currency = find([CURRENCY_COLUMN])
    if currency is None and cost[0].lower() != USD_COST_COLUMN.lower():
        raise _missing_column(CURRENCY_COLUMN, names)
    reserved = {c.lower() for c in (*COST_COLUMNS, DATE_COLUMN, CURRENCY_COLUMN)}
    dimensions = tuple(sorted((name, index) for key, (name, index) in names.items() if key not in reserved))
    return _ColumnMap(
        cost=cost[1],
        cost_name=cost[0],
        date=date[1],
        currency=currency[1] if currency else None,
        dimensions=dimensions,
    )


def _missing_column(wanted: str, names: Mapping[str, tuple[str, int]]) -> MalformedPayload:
    present = ", ".join(name for name, _ in names.values()) or "none"
    return MalformedPayload(
        f"{VENDOR} {QUERY_ENDPOINT} returned no {wanted} column (columns: {present}); "
        "the query answer is not the documented shape, so nothing was imported.",
        vendor=VENDOR,
        endpoint=QUERY_ENDPOINT,
    )


def _cost_row(row: Payload, columns: _ColumnMap, *, default_service: str) -> CostRow:
    values = row.data
    width = 1 + max(columns.cost, columns.date, columns.currency or 0, *(i for _, i in columns.dimensions))
    if not isinstance(values, list) or len(values) < width:
        raise _malformed(row.path, f"should be a list of {width} values in column order")
    cost_path = f"{row.path}.{columns.cost_name}"
    billed = row.as_decimal(values[columns.cost], cost_path)
    day = _usage_day(row, values[columns.date])
    currency = "USD" if columns.currency is None else _currency(row, values[columns.currency])
    dimensions = {name: _text(values[index]) for name, index in columns.dimensions}
    lowered = {name.lower(): value for name, value in dimensions.items()}
    service = next((lowered[c.lower()] for c in SERVICE_COLUMNS if lowered.get(c.lower())), default_service)
    project = next((lowered[c.lower()] for c in PROJECT_COLUMNS if lowered.get(c.lower())), "")
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    # Every dimension value is in the key, so rows Azure keeps apart stay apart in the ledger.
    key_parts = [day.strftime("%Y%m%d"), currency, *(f"{name}={value}" for name, value in dimensions.items())]
    return CostRow(
        source_key="azure:" + "|".join(key_parts),
        charge_period_start=start,
        charge_period_end=start + timedelta(days=1),
        billed_cost=billed,
        billing_currency=currency,
        service_name=service,
        charge_description=f"{service} ({project.rsplit('/', 1)[-1]})" if project else service,
        project=project,
    )


def _usage_day(row: Payload, value: Any) -> datetime:
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    try:
        if not isinstance(text, str) or len(text) != 8 or not text.isdigit():
            raise ValueError
        return datetime.strptime(text, "%Y%m%d").replace(tzinfo=UTC)
    except ValueError:
        raise _malformed(
            f"{row.path}.{DATE_COLUMN}", f"should be a date number YYYYMMDD, got {str(value)[:20]!r}"
        ) from None


def _currency(row: Payload, value: Any) -> str:
    try:
        return currency_code(value)
    except CurrencyError as exc:
        raise _malformed(f"{row.path}.{CURRENCY_COLUMN}", f"is not a usable currency ({exc})") from None


def _malformed(path: str, problem: str) -> MalformedPayload:
    # Same wording as Payload's errors, for values Payload has no reader for (positional cells).
    return MalformedPayload(
        f"{VENDOR} {QUERY_ENDPOINT} returned an unexpected payload: field '{path}' {problem}.",
        vendor=VENDOR,
        endpoint=QUERY_ENDPOINT,
    )


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _merge_same_keys(rows: list[CostRow]) -> list[CostRow]:
    """Sum rows that share a source_key, so the ledger's upsert never drops one of them."""
    merged: dict[str, CostRow] = {}
    for row in rows:
        previous = merged.get(row.source_key)
        merged[row.source_key] = (
            row if previous is None else replace(previous, billed_cost=previous.billed_cost + row.billed_cost)
        )
    return list(merged.values())


# --- small helpers ----------------------------------------------------------------------------


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _json_object(response: httpx.Response) -> dict[str, Any]:
    if "json" not in response.headers.get("content-type", ""):
        raise MalformedPayload(
            f"{VENDOR} {AAD_ENDPOINT} returned {response.headers.get('content-type') or 'a non-JSON body'} "
            f"(HTTP {response.status_code}) instead of JSON; check the token_url.",
            vendor=VENDOR,
            endpoint=AAD_ENDPOINT,
        )
    try:
        body = response.json()
    except ValueError:
        raise MalformedPayload(
            f"{VENDOR} {AAD_ENDPOINT} returned invalid or truncated JSON (HTTP {response.status_code}).",
            vendor=VENDOR,
            endpoint=AAD_ENDPOINT,
        ) from None
    if not isinstance(body, dict):
        raise MalformedPayload(
            f"{VENDOR} {AAD_ENDPOINT} returned JSON that is not an object.", vendor=VENDOR, endpoint=AAD_ENDPOINT
        )
    return body


def _token_refusal(status: int, body: Mapping[str, Any]) -> ConnectorError:
    """Azure AD's OAuth error, told in terms of what to fix. Only the error code and the AADSTS
    number are quoted: descriptions are long and never needed to act."""
    error = str(body.get("error") or "")
    description = str(body.get("error_description") or "")
    codes = description.split(":", 1)[0] if description.startswith("AADSTS") else ""
    reference = f" ({error}{', ' + codes if codes else ''})" if error else ""
    if error == "invalid_client" or status == 401:
        advice = AUTH_HINT
    elif error == "unauthorized_client":
        advice = "check the Application (client) ID: no app with that ID exists in the tenant."
    elif error == "invalid_request" and "AADSTS90002" in description:
        advice = "check the Directory (tenant) ID: Azure AD does not know that tenant."
    elif status >= 400 and error:
        advice = "check tenant_id, client_id and client_secret of the app registration."
    else:
        return MalformedPayload(
            f"{VENDOR} {AAD_ENDPOINT} answered HTTP {status} without an OAuth error; check the token_url.",
            vendor=VENDOR,
            endpoint=AAD_ENDPOINT,
        )
    return CredentialsRejected(
        f"Azure AD refused the service principal{reference}: {advice}",
        vendor=VENDOR,
        endpoint=AAD_ENDPOINT,
    )

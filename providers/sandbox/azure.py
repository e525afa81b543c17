"""Azure sandbox: the Azure AD token endpoint and the Cost Management Query API (vendor-apis.md §5).

One server plays both hosts, so a linked account points ``token_url`` at
``{server}/{tenant}/oauth2/v2.0/token`` and ``api_base`` at the server. Amounts are deterministic
per day, resource and meter; knobs let tests shuffle the column order, drop a column, shrink the
page size (``nextLink`` with ``$skiptoken``), mark days without spend (an all-quiet window is a 204)
and replay recorded answers verbatim. Resource and meter names are synthetic.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, quote

from providers.sandbox.base import SandboxRequest, SandboxResponse, SandboxVendor

TOKEN_PATH = re.compile(r"^/(?P<tenant>[^/]+)/oauth2/v2\.0/token$")
QUERY_PATH = re.compile(r"^/(?P<scope>.+)/providers/Microsoft\.CostManagement/query$", re.IGNORECASE)
# Marks Decimal amounts in the JSON text so they can be written as bare numbers, exactly.
_DECIMAL_MARK = re.compile(r'"@decimal:([-+0-9.Ee]+)"')


@dataclass(frozen=True)
class UsageRecord:
    """One billed meter on one resource; the sandbox bills it every day not marked quiet."""

    resource_group: str
    account: str
    service_name: str
    meter_subcategory: str

    def resource_id(self, subscription_id: str) -> str:
        return (
            f"/subscriptions/{subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.CognitiveServices/accounts/{self.account}"
        )


DEFAULT_RECORDS = (
    UsageRecord("rg-ai", "aoai-prod", "Cognitive Services", "Azure OpenAI"),
    UsageRecord("rg-ai", "aoai-prod", "Foundry Models", "Azure OpenAI Batch"),
    UsageRecord("rg-ai-dev", "aoai-dev", "Cognitive Services", "Azure OpenAI"),
    # Not Azure OpenAI: the connector's ServiceName filter must keep it out.
    UsageRecord("rg-data", "datalake", "Storage", "General Block Blob v2"),
)


class AzureSandbox(SandboxVendor):
    vendor = "azure_openai"

    TENANT_ID = "00000000-0000-0000-0000-00000000a2e0"
    CLIENT_ID = "11111111-1111-1111-1111-11111111c11e"
    CLIENT_SECRET = "sandbox~client~secret"  # noqa: S105  (a sandbox's own fixed credential)
    SUBSCRIPTION_ID = "22222222-2222-2222-2222-22222222505b"

    def __init__(
        self,
        *,
        seed: str = "demo",
        page_size: int = 1000,
        cost_column: str = "Cost",
        currency: str = "USD",
        column_order: Sequence[str] | None = None,
        drop_columns: Iterable[str] = (),
        records: Sequence[UsageRecord] = DEFAULT_RECORDS,
        quiet_days: Iterable[date] = (),
        has_cost_reader_role: bool = True,
    ) -> None:
        super().__init__(seed=seed)
        self.page_size = page_size
        self.cost_column = cost_column
        self.currency = currency
        # Columns are sent in this order (names not listed follow, in Azure's usual order).
        self.column_order = list(column_order or [])
        self.drop_columns = {name.lower() for name in drop_columns}
        self.records = tuple(records)
        self.quiet_days = set(quiet_days)
        self.has_cost_reader_role = has_cost_reader_role
        self.issued_tokens: set[str] = set()
        self.token_requests: list[dict[str, str]] = []
        self.query_bodies: list[Any] = []
        self.sent_columns: list[list[str]] = []  # column names of each page sent, in order
        self._replies: deque[SandboxResponse] = deque()

    # --- knobs ----------------------------------------------------------------------------------

    def credentials(self, server_url: str) -> dict[str, str]:
        """Credentials of a linked account that talks to this sandbox served at ``server_url``."""
        return {
            "tenant_id": self.TENANT_ID,
            "client_id": self.CLIENT_ID,
            "client_secret": self.CLIENT_SECRET,
            "subscription_id": self.SUBSCRIPTION_ID,
            "token_url": f"{server_url}/{self.TENANT_ID}/oauth2/v2.0/token",
        }

    def replay(self, body: str | None, *, status: int = 200) -> None:
        """Answer the next query with this raw JSON text (``None``: an empty 204) instead of data."""
        if body is None:
            self._replies.append(SandboxResponse(204 if status == 200 else status, None))
        else:
            self._replies.append(SandboxResponse(status, body))

    def day_cost(self, day: date, record: UsageRecord) -> Decimal:
        """What the sandbox bills ``record`` on ``day`` (changes when the day is restated)."""
        return self.amount(day, record.account, record.meter_subcategory)

    # --- routing --------------------------------------------------------------------------------

    def route(self, request: SandboxRequest) -> SandboxResponse:
        if request.method == "POST" and (match := TOKEN_PATH.match(request.path)):
            return self._token(match["tenant"], request)
        if request.method == "POST" and (match := QUERY_PATH.match(request.path)):
            return self._query(match["scope"], request)
        return _azure_error(404, "NotFound", f"No route for {request.method} {request.path}.")

    def _token(self, tenant: str, request: SandboxRequest) -> SandboxResponse:
        form = {k: v[0] for k, v in parse_qs(request.body.decode("utf-8", "replace")).items()}
        self.token_requests.append(form)
        if tenant != self.TENANT_ID:
            return _oauth_error(400, "invalid_request", f"AADSTS90002: Tenant '{tenant}' not found.")
        if (
            form.get("grant_type") != "client_credentials"
            or form.get("scope") != "https://management.azure.com/.default"
        ):
            return _oauth_error(
                400, "invalid_request", "AADSTS900144: The request body must contain grant_type and scope."
            )
        if form.get("client_id") != self.CLIENT_ID:
            return _oauth_error(
                400,
                "unauthorized_client",
                f"AADSTS700016: Application with identifier '{form.get('client_id')}' was not found.",
            )
        if form.get("client_secret") != self.CLIENT_SECRET:
            return _oauth_error(
                401,
                "invalid_client",
                "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the "
                f"client secret value, not the client secret ID, for a secret added to app '{self.CLIENT_ID}'.",
            )
        token = f"sandbox-{secrets.token_urlsafe(16)}"
        self.issued_tokens.add(token)
        return SandboxResponse(
            200, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}
        )

    def _query(self, scope: str, request: SandboxRequest) -> SandboxResponse:
        authorization = request.headers.get("authorization", "")
        if not authorization.startswith("Bearer ") or authorization[7:] not in self.issued_tokens:
            return _azure_error(401, "InvalidAuthenticationToken", "The access token is invalid.")
        if not request.param("api-version"):
            return _azure_error(400, "MissingApiVersionParameter", "The api-version query parameter is required.")
        if self._replies:
            return self._replies.popleft()
        if scope.lower() != f"subscriptions/{self.SUBSCRIPTION_ID}" or not self.has_cost_reader_role:
            return _azure_error(
                403,
                "AuthorizationFailed",
                f"The client '{self.CLIENT_ID}' does not have authorization to perform action "
                f"'Microsoft.CostManagement/query/action' over scope '/{scope}'.",
            )
        try:
            body = request.json()
            query = _Query.parse(body)
            offset = _offset(request.param("$skiptoken"))
        except (ValueError, KeyError, TypeError) as exc:
            return _azure_error(400, "BadRequest", f"Invalid query definition: {exc}")
        self.query_bodies.append(body)
        table = self._table(query)
        if not table:
            return SandboxResponse(204, None)
        page = table[offset : offset + self.page_size]
        next_link = None
        if offset + self.page_size < len(table):
            token = quote(base64.b64encode(str(offset + self.page_size).encode()).decode(), safe="")
            host = request.headers.get("host", "127.0.0.1")
            version = request.param("api-version")
            next_link = f"http://{host}{request.path}?api-version={version}&$skiptoken={token}"
        return self._page(query, page, next_link)

    # --- data -----------------------------------------------------------------------------------

    def _table(self, query: _Query) -> list[tuple[date, tuple[str, ...], Decimal]]:
        """Daily cost per group, summed over the records the filter keeps, sorted."""
        totals: dict[tuple[date, tuple[str, ...]], Decimal] = {}
        day = query.first_day
        while day <= query.last_day:
            if day not in self.quiet_days:
                for record in self.records:
                    dims = self._dimensions(record)
                    if query.keeps(dims):
                        group = tuple(dims[name.lower()] for name in query.grouping)
                        totals[(day, group)] = totals.get((day, group), Decimal(0)) + self.day_cost(day, record)
            day += timedelta(days=1)
        return [(d, g, cost) for (d, g), cost in sorted(totals.items())]

    def _dimensions(self, record: UsageRecord) -> dict[str, str]:
        resource_id = record.resource_id(self.SUBSCRIPTION_ID)
        return {
            # Cost Management reports resource ids in lower case.
            "resourceid": resource_id.lower(),
            "resourcegroup": record.resource_group,
            "resourcegroupname": record.resource_group,
            "servicename": record.service_name,
            "metersubcategory": record.meter_subcategory,
        }

    def _page(
        self, query: _Query, page: list[tuple[date, tuple[str, ...], Decimal]], next_link: str | None
    ) -> SandboxResponse:
        # Azure's usual order: the aggregated cost, the date, the groupings, the currency.
        columns = [(self.cost_column, "Number"), ("UsageDate", "Number"), *((g, "String") for g in query.grouping)]
        columns.append(("Currency", "String"))
        order = {name.lower(): i for i, name in enumerate(self.column_order)}
        columns = [c for c in columns if c[0].lower() not in self.drop_columns]
        columns.sort(key=lambda c: order.get(c[0].lower(), len(order)))
        self.sent_columns.append([name for name, _ in columns])
        rows = []
        for day, group, cost in page:
            values: dict[str, Any] = {
                self.cost_column: cost,
                "UsageDate": int(day.strftime("%Y%m%d")),
                "Currency": self.currency,
            }
            values.update(zip(query.grouping, group, strict=True))
            rows.append([values[name] for name, _ in columns])
        body = {
            "id": f"subscriptions/{self.SUBSCRIPTION_ID}/providers/Microsoft.CostManagement/query/{self.seed}",
            "name": self.seed,
            "type": "microsoft.costmanagement/Query",
            "properties": {
                "nextLink": next_link,
                "columns": [{"name": name, "type": kind} for name, kind in columns],
                "rows": rows,
            },
        }
        return SandboxResponse(200, encode_json(body))


@dataclass(frozen=True)
class _Query:
    first_day: date
    last_day: date
    grouping: tuple[str, ...]
    filter: Mapping[str, Any] | None

    KNOWN_DIMENSIONS = frozenset(
        {"resourceid", "resourcegroup", "resourcegroupname", "servicename", "metersubcategory"}
    )

    @classmethod
    def parse(cls, body: Any) -> _Query:
        if not isinstance(body, dict):
            raise ValueError("the body must be a QueryDefinition object (re-POST it to the nextLink too)")
        if body.get("type") not in ("ActualCost", "Usage", "AmortizedCost"):
            raise ValueError("type must be ActualCost, Usage or AmortizedCost")
        if body.get("timeframe") != "Custom":
            raise ValueError("this sandbox answers timeframe Custom only")
        period = body["timePeriod"]
        first = _rfc3339_day(period["from"])
        last = _rfc3339_day(period["to"])
        if last < first:
            raise ValueError("timePeriod.to is before timePeriod.from")
        dataset = body["dataset"]
        if dataset.get("granularity") != "Daily":
            raise ValueError("this sandbox answers Daily granularity only")
        grouping = tuple(g["name"] for g in dataset.get("grouping", []))
        if len(grouping) > 2 or any(g.get("type") != "Dimension" for g in dataset.get("grouping", [])):
            raise ValueError("grouping allows at most 2 Dimension entries")
        unknown = [g for g in grouping if g.lower() not in cls.KNOWN_DIMENSIONS]
        if unknown:
            raise ValueError(f"invalid dimension {unknown[0]!r}")
        aggregation = dataset.get("aggregation", {})
        if len(aggregation) != 1 or next(iter(aggregation.values())).get("function") != "Sum":
            raise ValueError("aggregation must be one Sum")
        return cls(first, last, grouping, dataset.get("filter"))

    def keeps(self, dimensions: Mapping[str, str]) -> bool:
        return self.filter is None or _matches(self.filter, dimensions)


def _matches(expression: Mapping[str, Any], dimensions: Mapping[str, str]) -> bool:
    if "and" in expression:
        return all(_matches(e, dimensions) for e in expression["and"])
    if "or" in expression:
        return any(_matches(e, dimensions) for e in expression["or"])
    comparison = expression["dimensions"]
    if comparison.get("operator") != "In":
        raise ValueError("only the In operator is supported")
    value = dimensions[comparison["name"].lower()]
    return value.lower() in {v.lower() for v in comparison["values"]}


def _rfc3339_day(text: str) -> date:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).date()


def _offset(skiptoken: str | None) -> int:
    if not skiptoken:
        return 0
    try:
        return int(base64.b64decode(skiptoken, validate=True).decode())
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"invalid $skiptoken {skiptoken!r}") from None


def encode_json(body: Any) -> str:
    """JSON with Decimal amounts written as bare numbers, digit for digit, as Azure sends floats."""

    def mark(value: Any) -> str:
        if isinstance(value, Decimal):
            return f"@decimal:{value}"
        raise TypeError(f"{type(value).__name__} is not JSON serializable")

    return _DECIMAL_MARK.sub(r"\1", json.dumps(body, default=mark))


def _oauth_error(status: int, error: str, description: str) -> SandboxResponse:
    return SandboxResponse(
        status, {"error": error, "error_description": description, "error_codes": [int(description[6:].split(":")[0])]}
    )


def _azure_error(status: int, code: str, message: str) -> SandboxResponse:
    return SandboxResponse(status, {"error": {"code": code, "message": message}})

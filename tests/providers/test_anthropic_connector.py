"""The Anthropic connector against the local Anthropic sandbox, over real loopback HTTP."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from providers.connectors.anthropic import AnthropicConnector
from providers.connectors.base import (
    AccountRef,
    Connector,
    ConnectorError,
    CredentialsRejected,
    MalformedPayload,
    NotSupported,
    TransientVendorError,
    Window,
    connector_classes,
)
from providers.sandbox.anthropic import AnthropicSandbox, page_token
from providers.sandbox.base import SandboxServer, serve
from tests.providers.conftest import Canned, Recorder

ADMIN_KEY = "sk-ant-admin01-TestSecretKey0123456789"
WORKSPACE_KEY = "sk-ant-api03-WorkspaceSecret0123456789"

# The documented cost and usage responses (vendor-apis.md §2.2 and §2.3), first pages of two.
COST_PAGE_1 = {
    "data": [
        {
            "ending_at": "2025-08-02T00:00:00Z",
            "results": [
                {
                    "amount": "123.78912",
                    "context_window": "0-200k",
                    "cost_type": "tokens",
                    "currency": "USD",
                    "description": "Claude Sonnet 4 Usage - Input Tokens",
                    "inference_geo": "global",
                    "model": "claude-opus-4-6",
                    "service_tier": "standard",
                    "token_type": "uncached_input_tokens",
                    "workspace_id": "wrkspc_01JwQvzr7rXLA5AGx3HKfFUJ",
                }
            ],
            "starting_at": "2025-08-01T00:00:00Z",
        }
    ],
    "has_more": True,
    "next_page": "page_MjAyNS0wNS0xNFQwMDowMDowMFo=",
}
USAGE_PAGE_1 = {
    "data": [
        {
            "ending_at": "2025-08-02T00:00:00Z",
            "results": [
                {
                    "account_id": "user_01WCz1FkmYMm4gnmykNKUu3Q",
                    "api_key_id": "apikey_01Rj2N8SVvo6BePZj99NhmiT",
                    "cache_creation": {"ephemeral_1h_input_tokens": 1000, "ephemeral_5m_input_tokens": 500},
                    "cache_read_input_tokens": 200,
                    "context_window": "0-200k",
                    "inference_geo": "global",
                    "model": "claude-opus-4-6",
                    "output_tokens": 500,
                    "server_tool_use": {"web_search_requests": 10},
                    "service_account_id": "svac_01Hk3R9TWxq7CfQak00OiVw4",
                    "service_tier": "standard",
                    "uncached_input_tokens": 1500,
                    "workspace_id": "wrkspc_01JwQvzr7rXLA5AGx3HKfFUJ",
                }
            ],
            "starting_at": "2025-08-01T00:00:00Z",
        }
    ],
    "has_more": True,
    "next_page": "page_MjAyNS0wNS0xNFQwMDowMDowMFo=",
}
LAST_PAGE = {"data": [], "has_more": False, "next_page": None}
AUGUST_1 = Window(datetime(2025, 8, 1, tzinfo=UTC), datetime(2025, 8, 2, tzinfo=UTC))


def CannedAnthropic(*bodies: Any) -> Canned:
    return Canned("anthropic", *bodies)


@pytest.fixture
def sandbox() -> AnthropicSandbox:
    return AnthropicSandbox(seed="tests")


@pytest.fixture
def server(sandbox: AnthropicSandbox) -> Iterator[SandboxServer]:
    with serve(sandbox) as running:
        yield running


def connect(server: SandboxServer, recorder: Recorder, key: str = ADMIN_KEY) -> AnthropicConnector:
    account = AccountRef(vendor="anthropic", credentials={"admin_key": key}, api_base=server.url)
    return AnthropicConnector(account, sleep=recorder)


def midnight(days_ago: int) -> datetime:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days_ago)


def busy_days(sandbox: AnthropicSandbox, count: int) -> Window:
    """A window of ``count`` consecutive past days none of which is quiet by default."""
    for oldest in range(count + 1, 200):
        days = [midnight(oldest - offset).date() for offset in range(count)]
        if not any(sandbox.is_quiet(day) for day in days):
            return Window(midnight(oldest), midnight(oldest - count))
    raise AssertionError("no run of busy days in the sandbox's last 200 days")


def days_of(rows: list[Any]) -> set[date]:
    return {row.charge_period_start.date() for row in rows}


# --- the documented bodies, literally ---------------------------------------------------------


def test_documented_cost_amount_in_cents_becomes_exact_dollars(recorder: Recorder) -> None:
    canned = CannedAnthropic(COST_PAGE_1, LAST_PAGE)
    with serve(canned) as server:
        [row] = connect(server, recorder).fetch_costs(AUGUST_1)

    assert row.billed_cost == Decimal("1.2378912")
    assert str(row.billed_cost) == "1.2378912"
    assert row.billing_currency == "USD"
    assert row.service_name == "claude-opus-4-6"
    assert row.charge_description == "Claude Sonnet 4 Usage - Input Tokens"
    assert row.project == "wrkspc_01JwQvzr7rXLA5AGx3HKfFUJ"
    assert row.charge_period_start == datetime(2025, 8, 1, tzinfo=UTC)
    assert row.charge_period_end == datetime(2025, 8, 2, tzinfo=UTC)
    # The opaque token of the documented first page is passed back unchanged.
    assert canned.requests[1].param("page") == "page_MjAyNS0wNS0xNFQwMDowMDowMFo="


def test_documented_usage_result_yields_one_row_per_quantity(recorder: Recorder) -> None:
    with serve(CannedAnthropic(USAGE_PAGE_1, LAST_PAGE)) as server:
        rows = connect(server, recorder).fetch_usage(AUGUST_1)

    assert {row.unit: row.quantity for row in rows} == {
        "input_tokens": Decimal(1500),
        "cache_read_input_tokens": Decimal(200),
        "cache_write_5m_input_tokens": Decimal(500),
        "cache_write_1h_input_tokens": Decimal(1000),
        "output_tokens": Decimal(500),
        "web_search_requests": Decimal(10),
    }
    assert {row.service_name for row in rows} == {"claude-opus-4-6"}
    assert {row.project for row in rows} == {"wrkspc_01JwQvzr7rXLA5AGx3HKfFUJ"}
    assert len({row.source_key for row in rows}) == 6


def test_cost_without_description_falls_back_to_cost_and_token_types_in_default_workspace(
    recorder: Recorder,
) -> None:
    body = {
        "data": [
            {
                "starting_at": "2025-08-01T00:00:00Z",
                "ending_at": "2025-08-02T00:00:00Z",
                "results": [{"amount": "0.5", "currency": "usd", "cost_type": "web_search", "workspace_id": None}],
            }
        ],
        "has_more": False,
        "next_page": None,
    }
    with serve(CannedAnthropic(body)) as server:
        [row] = connect(server, recorder).fetch_costs(AUGUST_1)

    assert row.billed_cost == Decimal("0.005")
    assert row.billing_currency == "USD"
    assert row.charge_description == "web_search"
    assert row.project == "default"
    assert row.service_name == ""


# --- requests as Anthropic documents them -------------------------------------------------------


def test_cost_report_sends_bracket_group_by_and_floors_start_to_utc_midnight(
    sandbox: AnthropicSandbox, server: SandboxServer, recorder: Recorder
) -> None:
    start = midnight(5) + timedelta(hours=13, minutes=7)
    connect(server, recorder).fetch_costs(Window(start, midnight(2)))

    [request] = sandbox.requests
    assert request.path == "/v1/organizations/cost_report"
    assert request.params("group_by[]") == ["workspace_id", "description"]
    assert "group_by" not in request.query
    assert request.param("starting_at") == midnight(5).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert request.param("ending_at") == midnight(2).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert request.param("bucket_width") == "1d"
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["x-api-key"] == ADMIN_KEY


def test_usage_report_groups_by_model_and_workspace(
    sandbox: AnthropicSandbox, server: SandboxServer, recorder: Recorder
) -> None:
    rows = connect(server, recorder).fetch_usage(busy_days(sandbox, 2))

    [request] = sandbox.requests
    assert request.path == "/v1/organizations/usage_report/messages"
    assert request.params("group_by[]") == ["model", "workspace_id"]
    assert {row.service_name for row in rows} == {"claude-sonnet-4-5", "claude-haiku-4-5"}
    assert {row.project for row in rows} == {"default", "wrkspc_01SbxResearch7Qk2Lm9Np", "wrkspc_01SbxSupport4Hv8Rt1Zx"}
    # 2 days x 2 models x 3 workspaces x 6 quantities.
    assert len(rows) == 72


def test_cost_report_follows_next_page_until_has_more_is_false(
    sandbox: AnthropicSandbox, server: SandboxServer, recorder: Recorder
) -> None:
    window = Window(midnight(20), midnight(0))
    rows = connect(server, recorder).fetch_costs(window)

    pages = [request.param("page") for request in sandbox.requests]
    assert pages == [None, page_token(midnight(13).date()), page_token(midnight(6).date())]
    assert all(request.param("limit") == "7" for request in sandbox.requests)
    busy = {midnight(n).date() for n in range(1, 21) if not sandbox.is_quiet(midnight(n).date())}
    assert days_of(rows) == busy
    assert len({row.source_key for row in rows}) == len(rows)


# --- data over time -------------------------------------------------------------------------


def test_empty_bucket_yields_no_rows_for_that_day(
    sandbox: AnthropicSandbox, server: SandboxServer, recorder: Recorder
) -> None:
    window = busy_days(sandbox, 3)
    quiet = (window.start + timedelta(days=1)).date()
    sandbox.quiet_days.add(quiet)
    connector = connect(server, recorder)

    costs, usage = connector.fetch_costs(window), connector.fetch_usage(window)

    expected = {window.start.date(), (window.start + timedelta(days=2)).date()}
    assert days_of(costs) == expected
    assert days_of(usage) == expected


def test_restated_day_changes_only_that_day_under_the_same_keys(
    sandbox: AnthropicSandbox, server: SandboxServer, recorder: Recorder
) -> None:
    window = busy_days(sandbox, 3)
    restated = (window.start + timedelta(days=1)).date()
    connector = connect(server, recorder)
    before = {row.source_key: row for row in connector.fetch_costs(window)}

    sandbox.restate(restated)
    after = {row.source_key: row for row in connector.fetch_costs(window)}

    assert after.keys() == before.keys()
    changed = {key for key in after if after[key].billed_cost != before[key].billed_cost}
    assert changed
    assert {after[key].charge_period_start.date() for key in changed} == {restated}


# --- credentials ----------------------------------------------------------------------------


def test_workspace_key_is_refused_before_any_request(
    sandbox: AnthropicSandbox, server: SandboxServer, recorder: Recorder
) -> None:
    connector = connect(server, recorder, key=WORKSPACE_KEY)

    with pytest.raises(CredentialsRejected) as raised:
        connector.fetch_costs(Window(midnight(3), midnight(1)))

    assert "Admin key" in raised.value.message
    assert "Settings → Admin keys" in raised.value.message
    assert WORKSPACE_KEY not in str(raised.value)
    assert sandbox.requests == []


def test_check_credentials_reports_a_workspace_key_as_not_an_admin_key(
    sandbox: AnthropicSandbox, server: SandboxServer, recorder: Recorder
) -> None:
    result = connect(server, recorder, key=WORKSPACE_KEY).check_credentials()

    assert not result.ok
    assert "not an Anthropic Admin key" in result.message
    assert sandbox.requests == []


def test_check_credentials_accepts_an_admin_key(server: SandboxServer, recorder: Recorder) -> None:
    result = connect(server, recorder).check_credentials()

    assert result.ok
    assert "accepted" in result.message


def test_revoked_admin_key_answered_401_is_rejected_with_advice(
    sandbox: AnthropicSandbox, server: SandboxServer, recorder: Recorder
) -> None:
    sandbox.revoked_keys.add(ADMIN_KEY)
    connector = connect(server, recorder)

    with pytest.raises(CredentialsRejected) as raised:
        connector.fetch_usage(Window(midnight(3), midnight(1)))
    result = connector.check_credentials()

    assert "(401)" in raised.value.message
    assert "Admin key" in raised.value.message
    assert not result.ok
    assert recorder.delays == []


def test_missing_admin_key_is_rejected_without_a_request(
    sandbox: AnthropicSandbox, server: SandboxServer, recorder: Recorder
) -> None:
    account = AccountRef(vendor="anthropic", credentials={}, api_base=server.url)

    with pytest.raises(CredentialsRejected, match="No Anthropic Admin key is saved"):
        AnthropicConnector(account, sleep=recorder).fetch_costs(Window(midnight(3), midnight(1)))
    assert sandbox.requests == []


# --- faults ---------------------------------------------------------------------------------


def test_rate_limit_waits_as_retry_after_says_then_succeeds(
    sandbox: AnthropicSandbox, server: SandboxServer, recorder: Recorder
) -> None:
    window = busy_days(sandbox, 2)
    expected = connect(server, recorder).fetch_costs(window)
    sandbox.inject("rate_limit", retry_after=7)

    rows = connect(server, recorder).fetch_costs(window)

    assert recorder.delays == [7.0]
    assert rows == expected


def test_server_errors_outlasting_the_retries_raise_transient_error(
    sandbox: AnthropicSandbox, server: SandboxServer, recorder: Recorder
) -> None:
    sandbox.inject("server_error", times=4)

    with pytest.raises(TransientVendorError) as raised:
        connect(server, recorder).fetch_costs(Window(midnight(3), midnight(1)))

    assert raised.value.retryable
    assert "HTTP 503 after 4 attempts" in raised.value.message
    assert recorder.delays == [1.0, 2.0, 4.0]


def test_html_page_instead_of_json_is_malformed(
    sandbox: AnthropicSandbox, server: SandboxServer, recorder: Recorder
) -> None:
    sandbox.inject("html")

    with pytest.raises(MalformedPayload, match="HTML page"):
        connect(server, recorder).fetch_costs(Window(midnight(3), midnight(1)))


def test_truncated_json_is_malformed(sandbox: AnthropicSandbox, server: SandboxServer, recorder: Recorder) -> None:
    sandbox.inject("truncated")

    with pytest.raises(MalformedPayload, match="invalid or truncated JSON"):
        connect(server, recorder).fetch_usage(Window(midnight(3), midnight(1)))


def test_missing_amount_is_malformed_naming_the_field_path(recorder: Recorder) -> None:
    body = {**COST_PAGE_1, "has_more": False, "next_page": None}
    body["data"] = [{**COST_PAGE_1["data"][0], "results": [{"currency": "USD"}]}]  # type: ignore[index]

    with serve(CannedAnthropic(body)) as server, pytest.raises(MalformedPayload) as raised:
        connect(server, recorder).fetch_costs(AUGUST_1)

    assert "field 'data[0].results[0].amount' is missing" in raised.value.message
    assert raised.value.endpoint == "/v1/organizations/cost_report"


def test_has_more_without_next_page_is_malformed(recorder: Recorder) -> None:
    with serve(CannedAnthropic({**LAST_PAGE, "has_more": True})) as server, pytest.raises(MalformedPayload) as raised:
        connect(server, recorder).fetch_costs(AUGUST_1)

    assert "next_page" in raised.value.message


def test_no_credential_reaches_an_exception_or_the_log(
    sandbox: AnthropicSandbox, server: SandboxServer, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    window = Window(midnight(3), midnight(1))
    messages: list[str] = []
    sandbox.inject("rate_limit")
    connect(server, recorder).fetch_costs(window)
    for fault in ("server_error", "html", "truncated"):
        sandbox.inject(fault, times=4 if fault == "server_error" else 1)
        with pytest.raises(ConnectorError) as raised:
            connect(server, recorder).fetch_costs(window)
        messages.append(str(raised.value))
    with pytest.raises(CredentialsRejected) as rejected:
        connect(server, recorder, key=WORKSPACE_KEY).fetch_usage(window)
    messages.append(str(rejected.value))
    sandbox.revoked_keys.add(ADMIN_KEY)
    messages.append(connect(server, recorder).check_credentials().message)

    for secret in (ADMIN_KEY, WORKSPACE_KEY):
        assert all(secret not in message for message in messages)
        assert secret not in caplog.text
    assert "retrying" in caplog.text


# --- the contract ---------------------------------------------------------------------------


def test_balance_is_not_supported_with_an_explanation(server: SandboxServer, recorder: Recorder) -> None:
    with pytest.raises(NotSupported, match="no prepaid-balance API"):
        connect(server, recorder).fetch_balance()


def test_connector_is_registered_and_defaults_to_the_documented_base() -> None:
    connector = AnthropicConnector(AccountRef(vendor="anthropic", credentials={"admin_key": ADMIN_KEY}))

    assert connector_classes()["anthropic"] is AnthropicConnector
    assert isinstance(connector, Connector)
    assert connector.api_base == "https://api.anthropic.com"
    assert connector.capabilities == frozenset({"costs", "usage"})
    assert [field.name for field in connector.credential_fields] == ["admin_key"]


# --- the sandbox itself ---------------------------------------------------------------------


def test_sandbox_fills_dimensions_only_when_grouped_by_them(sandbox: AnthropicSandbox, server: SandboxServer) -> None:
    window = busy_days(sandbox, 1)
    headers = {"x-api-key": ADMIN_KEY, "anthropic-version": "2023-06-01"}
    base = {
        "starting_at": window.start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "ending_at": window.end.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    url = f"{server.url}/v1/organizations/cost_report"

    ungrouped = httpx.get(url, params=base, headers=headers).json()
    by_workspace = httpx.get(url, params={**base, "group_by[]": "workspace_id"}, headers=headers).json()

    [total] = ungrouped["data"][0]["results"]
    assert total["workspace_id"] is None and total["description"] is None and total["model"] is None
    assert isinstance(total["amount"], str)
    workspaces = [result["workspace_id"] for result in by_workspace["data"][0]["results"]]
    assert sorted(workspaces, key=str) == sorted(
        [None, "wrkspc_01SbxResearch7Qk2Lm9Np", "wrkspc_01SbxSupport4Hv8Rt1Zx"], key=str
    )
    assert all(result["description"] is None for result in by_workspace["data"][0]["results"])
    assert sum(Decimal(r["amount"]) for r in by_workspace["data"][0]["results"]) == Decimal(total["amount"])


def test_sandbox_refuses_bare_group_by_and_a_missing_version_header(server: SandboxServer) -> None:
    url = f"{server.url}/v1/organizations/cost_report"
    params = {"starting_at": midnight(3).strftime("%Y-%m-%dT%H:%M:%SZ"), "group_by": "workspace_id"}

    bare = httpx.get(url, params=params, headers={"x-api-key": ADMIN_KEY, "anthropic-version": "2023-06-01"})
    unversioned = httpx.get(url, params=params, headers={"x-api-key": ADMIN_KEY})
    unauthorized = httpx.get(
        url, params=params, headers={"x-api-key": WORKSPACE_KEY, "anthropic-version": "2023-06-01"}
    )

    assert bare.status_code == 400
    assert "group_by[]" in bare.json()["error"]["message"]
    assert unversioned.status_code == 400
    assert unauthorized.status_code == 401
    assert unauthorized.json() == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
    }

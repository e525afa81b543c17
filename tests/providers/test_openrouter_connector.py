"""The OpenRouter connector against the local OpenRouter sandbox, over real loopback HTTP."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from providers.connectors.base import (
    AccountRef,
    Connector,
    ConnectorError,
    CredentialsRejected,
    MalformedPayload,
    TransientVendorError,
    Window,
    connector_classes,
)
from providers.connectors.openrouter import OpenRouterConnector, activity_days
from providers.sandbox.base import SandboxServer, SandboxVendor, serve
from providers.sandbox.openrouter import OpenRouterSandbox
from tests.providers.conftest import Canned, Recorder

MANAGEMENT_KEY = "sk-or-v1-mgmt-TestSecretKey0123456789abcdef"
INFERENCE_KEY = "sk-or-v1-InferenceSecret0123456789abcdef"

# The documented responses (vendor-apis.md §3.1 and §3.3), as raw JSON text: numbers stay numbers.
DOCUMENTED_CREDITS = '{"data": {"total_credits": 100.5, "total_usage": 25.75}}'
DOCUMENTED_ACTIVITY = """{"data": [{"byok_usage_inference": 0.012, "completion_tokens": 125, "date": "2025-08-24",
  "endpoint_id": "550e8400-e29b-41d4-a716-446655440000", "model": "openai/gpt-4.1",
  "model_permaslug": "openai/gpt-4.1-2025-04-14", "prompt_tokens": 50, "provider_name": "OpenAI",
  "reasoning_tokens": 25, "requests": 5, "usage": 0.015}]}"""


def CannedOpenRouter(*bodies: Any) -> Canned:
    return Canned("openrouter", *bodies)


@pytest.fixture
def sandbox() -> OpenRouterSandbox:
    return OpenRouterSandbox(seed="tests")


@pytest.fixture
def server(sandbox: OpenRouterSandbox) -> Iterator[SandboxServer]:
    with serve(sandbox) as running:
        yield running


def connect(server: SandboxServer, recorder: Recorder, key: str = MANAGEMENT_KEY) -> OpenRouterConnector:
    account = AccountRef(vendor="openrouter", credentials={"management_key": key}, api_base=f"{server.url}/api/v1")
    return OpenRouterConnector(account, sleep=recorder)


def midnight(days_ago: int) -> datetime:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days_ago)


def busy_days(sandbox: OpenRouterSandbox, count: int) -> Window:
    """A window of ``count`` consecutive days within the last 30, none quiet or idle by default."""
    for oldest in range(count, 31):
        days = [midnight(oldest - offset).date() for offset in range(count)]
        if all(sandbox.activity(day) for day in days):
            return Window(midnight(oldest), midnight(oldest - count))
    raise AssertionError("no run of busy days in the sandbox's last 30 days")


def requested_dates(sandbox: SandboxVendor) -> list[str | None]:
    return [request.param("date") for request in sandbox.requests if request.path.endswith("/activity")]


def days_of(rows: list[Any]) -> set[date]:
    return {row.charge_period_start.date() for row in rows}


# --- the documented bodies, literally ---------------------------------------------------------


def test_documented_credits_give_a_balance_of_credits_minus_usage(recorder: Recorder) -> None:
    canned = CannedOpenRouter(DOCUMENTED_CREDITS)
    with serve(canned) as server:
        balance = connect(server, recorder).fetch_balance()

    assert balance.amount == Decimal("74.75")
    assert str(balance.amount) == "74.75"
    assert balance.currency == "USD"
    assert balance.details == {"total_credits": Decimal("100.5"), "total_usage": Decimal("25.75")}
    assert canned.requests[0].path == "/api/v1/credits"
    assert canned.requests[0].headers["authorization"] == f"Bearer {MANAGEMENT_KEY}"


def test_documented_activity_item_becomes_one_cost_row_and_four_usage_rows(recorder: Recorder) -> None:
    window = Window(midnight(1), midnight(0))
    canned = CannedOpenRouter(DOCUMENTED_ACTIVITY, DOCUMENTED_ACTIVITY)
    with serve(canned) as server:
        connector = connect(server, recorder)
        [cost] = connector.fetch_costs(window)
        usage = connector.fetch_usage(window)

    key = "openrouter:2025-08-24:openai/gpt-4.1-2025-04-14:550e8400-e29b-41d4-a716-446655440000"
    assert cost.source_key == key
    assert cost.billed_cost == Decimal("0.015")
    assert cost.billing_currency == "USD"
    assert cost.service_name == "openai/gpt-4.1"
    assert cost.charge_description == "OpenAI via OpenRouter"
    assert cost.project == ""
    assert cost.charge_period_start == datetime(2025, 8, 24, tzinfo=UTC)
    assert cost.charge_period_end == datetime(2025, 8, 25, tzinfo=UTC)
    assert {row.unit: row.quantity for row in usage} == {
        "input_tokens": Decimal(50),
        "output_tokens": Decimal(125),
        "reasoning_tokens": Decimal(25),
        "requests": Decimal(5),
    }
    assert {row.source_key for row in usage} == {
        f"{key}:{unit}" for unit in ("input_tokens", "output_tokens", "reasoning_tokens", "requests")
    }
    assert requested_dates(canned) == [midnight(1).date().isoformat()] * 2


# --- which days are asked for ---------------------------------------------------------------


def test_activity_is_requested_once_per_completed_day_of_the_last_30(
    sandbox: OpenRouterSandbox, server: SandboxServer, recorder: Recorder
) -> None:
    window = Window(midnight(45), datetime.now(UTC) + timedelta(hours=1))
    rows = connect(server, recorder).fetch_costs(window)

    assert requested_dates(sandbox) == [midnight(n).date().isoformat() for n in range(30, 0, -1)]
    assert days_of(rows) == {midnight(n).date() for n in range(30, 0, -1) if sandbox.activity(midnight(n).date())}


def test_window_outside_the_last_30_completed_days_sends_no_request(
    sandbox: OpenRouterSandbox, server: SandboxServer, recorder: Recorder
) -> None:
    connector = connect(server, recorder)

    assert connector.fetch_costs(Window(midnight(60), midnight(31))) == []
    assert connector.fetch_usage(Window(midnight(0), midnight(0) + timedelta(hours=20))) == []
    assert sandbox.requests == []


def test_activity_days_overlap_the_window_and_exclude_its_exclusive_end() -> None:
    today = date(2025, 9, 30)
    window = Window(datetime(2025, 9, 10, 15, tzinfo=UTC), datetime(2025, 9, 13, tzinfo=UTC))

    assert activity_days(window, today=today) == [date(2025, 9, 10), date(2025, 9, 11), date(2025, 9, 12)]
    assert activity_days(Window(datetime(2025, 8, 1, tzinfo=UTC), datetime(2025, 9, 2, tzinfo=UTC)), today=today) == [
        date(2025, 8, 31),
        date(2025, 9, 1),
    ]


# --- data over time -------------------------------------------------------------------------


def test_quiet_day_yields_no_rows(sandbox: OpenRouterSandbox, server: SandboxServer, recorder: Recorder) -> None:
    window = busy_days(sandbox, 3)
    quiet = (window.start + timedelta(days=1)).date()
    sandbox.quiet_days.add(quiet)
    connector = connect(server, recorder)

    costs, usage = connector.fetch_costs(window), connector.fetch_usage(window)

    expected = {window.start.date(), (window.start + timedelta(days=2)).date()}
    assert days_of(costs) == expected
    assert days_of(usage) == expected
    assert len(requested_dates(sandbox)) == 6


def test_restated_day_changes_only_that_day_under_the_same_keys(
    sandbox: OpenRouterSandbox, server: SandboxServer, recorder: Recorder
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


def test_balance_follows_the_sandbox_spend_and_top_up(
    sandbox: OpenRouterSandbox, server: SandboxServer, recorder: Recorder
) -> None:
    connector = connect(server, recorder)
    sandbox.set_credits(Decimal("50"), Decimal("0"))
    sandbox.spend(Decimal("12.345678"))
    sandbox.top_up(Decimal("20.00"))

    balance = connector.fetch_balance()

    assert balance.amount == Decimal("57.654322")
    assert balance.details["total_usage"] == Decimal("12.345678")


# --- credentials ----------------------------------------------------------------------------


def test_inference_key_is_refused_with_a_pointer_to_management_keys(server: SandboxServer, recorder: Recorder) -> None:
    connector = connect(server, recorder, key=INFERENCE_KEY)

    with pytest.raises(CredentialsRejected) as raised:
        connector.fetch_costs(Window(midnight(3), midnight(1)))
    result = connector.check_credentials()

    assert "(403)" in raised.value.message
    assert "management key" in raised.value.message
    assert "https://openrouter.ai/settings/management-keys" in raised.value.message
    assert not result.ok
    assert "management key" in result.message
    assert recorder.delays == []


def test_unknown_key_answered_401_is_rejected(
    sandbox: OpenRouterSandbox, server: SandboxServer, recorder: Recorder
) -> None:
    sandbox.revoked_keys.add(MANAGEMENT_KEY)

    with pytest.raises(CredentialsRejected) as raised:
        connect(server, recorder).fetch_balance()

    assert "(401)" in raised.value.message
    assert "https://openrouter.ai/settings/management-keys" in raised.value.message


def test_check_credentials_accepts_a_management_key(server: SandboxServer, recorder: Recorder) -> None:
    assert connect(server, recorder).check_credentials().ok


def test_missing_key_is_rejected_without_a_request(
    sandbox: OpenRouterSandbox, server: SandboxServer, recorder: Recorder
) -> None:
    account = AccountRef(vendor="openrouter", credentials={"management_key": " "}, api_base=f"{server.url}/api/v1")

    result = OpenRouterConnector(account, sleep=recorder).check_credentials()

    assert not result.ok
    assert "No OpenRouter management key is saved" in result.message
    assert sandbox.requests == []


# --- faults ---------------------------------------------------------------------------------


def test_rate_limit_waits_as_retry_after_says_then_succeeds(
    sandbox: OpenRouterSandbox, server: SandboxServer, recorder: Recorder
) -> None:
    sandbox.inject("rate_limit", retry_after=3, path_contains="/credits")

    balance = connect(server, recorder).fetch_balance()

    assert recorder.delays == [3.0]
    assert balance.amount == Decimal("74.75")


def test_server_errors_outlasting_the_retries_raise_transient_error(
    sandbox: OpenRouterSandbox, server: SandboxServer, recorder: Recorder
) -> None:
    sandbox.inject("server_error", status=502, times=4)

    with pytest.raises(TransientVendorError) as raised:
        connect(server, recorder).fetch_costs(Window(midnight(3), midnight(1)))

    assert "/activity answered HTTP 502 after 4 attempts" in raised.value.message
    assert recorder.delays == [1.0, 2.0, 4.0]


def test_html_page_instead_of_json_is_malformed(
    sandbox: OpenRouterSandbox, server: SandboxServer, recorder: Recorder
) -> None:
    sandbox.inject("html")

    with pytest.raises(MalformedPayload, match="HTML page"):
        connect(server, recorder).fetch_balance()


def test_truncated_json_is_malformed(sandbox: OpenRouterSandbox, server: SandboxServer, recorder: Recorder) -> None:
    sandbox.inject("truncated")

    with pytest.raises(MalformedPayload, match="invalid or truncated JSON"):
        connect(server, recorder).fetch_usage(Window(midnight(3), midnight(1)))


def test_missing_usage_is_malformed_naming_the_field_path(recorder: Recorder) -> None:
    body = DOCUMENTED_ACTIVITY.replace(', "usage": 0.015', "")

    with serve(CannedOpenRouter(body)) as server, pytest.raises(MalformedPayload) as raised:
        connect(server, recorder).fetch_costs(Window(midnight(1), midnight(0)))

    assert "field 'data[0].usage' is missing" in raised.value.message
    assert raised.value.endpoint == "/activity"


def test_missing_total_usage_is_malformed_naming_the_field_path(recorder: Recorder) -> None:
    with (
        serve(CannedOpenRouter('{"data": {"total_credits": 100.5}}')) as server,
        pytest.raises(MalformedPayload) as raised,
    ):
        connect(server, recorder).fetch_balance()

    assert "field 'data.total_usage' is missing" in raised.value.message


def test_no_credential_reaches_an_exception_or_the_log(
    sandbox: OpenRouterSandbox, server: SandboxServer, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    messages: list[str] = []
    sandbox.inject("rate_limit")
    connect(server, recorder).fetch_balance()
    for fault in ("server_error", "html", "truncated"):
        sandbox.inject(fault, times=4 if fault == "server_error" else 1)
        with pytest.raises(ConnectorError) as raised:
            connect(server, recorder).fetch_balance()
        messages.append(str(raised.value))
    messages.append(connect(server, recorder, key=INFERENCE_KEY).check_credentials().message)
    sandbox.revoked_keys.add(MANAGEMENT_KEY)
    messages.append(connect(server, recorder).check_credentials().message)

    for secret in (MANAGEMENT_KEY, INFERENCE_KEY):
        assert all(secret not in message for message in messages)
        assert secret not in caplog.text
    assert "retrying" in caplog.text


# --- the contract ---------------------------------------------------------------------------


def test_connector_is_registered_and_defaults_to_the_documented_base() -> None:
    connector = OpenRouterConnector(AccountRef(vendor="openrouter", credentials={"management_key": MANAGEMENT_KEY}))

    assert connector_classes()["openrouter"] is OpenRouterConnector
    assert isinstance(connector, Connector)
    assert connector.api_base == "https://openrouter.ai/api/v1"
    assert connector.capabilities == frozenset({"costs", "usage", "balance"})
    assert [field.name for field in connector.credential_fields] == ["management_key"]


# --- the sandbox itself ---------------------------------------------------------------------


def test_sandbox_writes_money_as_json_numbers_and_refuses_old_dates(server: SandboxServer) -> None:
    headers = {"Authorization": f"Bearer {MANAGEMENT_KEY}"}

    credits = httpx.get(f"{server.url}/api/v1/credits", headers=headers)
    too_old = httpx.get(
        f"{server.url}/api/v1/activity", params={"date": midnight(31).date().isoformat()}, headers=headers
    )
    today = httpx.get(f"{server.url}/api/v1/activity", params={"date": midnight(0).date().isoformat()}, headers=headers)

    assert credits.text == DOCUMENTED_CREDITS
    assert too_old.status_code == 400
    assert today.status_code == 400
    assert too_old.json()["error"]["code"] == 400

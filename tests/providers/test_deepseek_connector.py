"""The DeepSeek connector against the local DeepSeek sandbox, over real loopback HTTP."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
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
    NotSupported,
    TransientVendorError,
    Window,
    connector_classes,
)
from providers.connectors.deepseek import DeepSeekConnector
from providers.sandbox.base import SandboxServer, serve
from providers.sandbox.deepseek import DeepSeekSandbox
from tests.providers.conftest import Canned, Recorder

API_KEY = "sk-TestSecretDeepSeekKey0123456789abcdef"

# The documented response (vendor-apis.md §4.1), as raw JSON text.
DOCUMENTED_BALANCE = """{
  "is_available": true,
  "balance_infos": [
    {
      "currency": "CNY",
      "total_balance": "110.00",
      "granted_balance": "10.00",
      "topped_up_balance": "100.00"
    }
  ]
}"""


def CannedDeepSeek(*bodies: Any) -> Canned:
    return Canned("deepseek", *bodies)


@pytest.fixture
def sandbox() -> DeepSeekSandbox:
    return DeepSeekSandbox(seed="tests")


@pytest.fixture
def server(sandbox: DeepSeekSandbox) -> Iterator[SandboxServer]:
    with serve(sandbox) as running:
        yield running


def connect(server: SandboxServer, recorder: Recorder, key: str = API_KEY) -> DeepSeekConnector:
    account = AccountRef(vendor="deepseek", credentials={"api_key": key}, api_base=server.url)
    return DeepSeekConnector(account, sleep=recorder)


def last_week() -> Window:
    now = datetime.now(UTC)
    return Window(now - timedelta(days=7), now)


# --- the documented body, literally -----------------------------------------------------------


def test_documented_balance_is_read_exactly_in_its_currency(recorder: Recorder) -> None:
    canned = CannedDeepSeek(DOCUMENTED_BALANCE)
    with serve(canned) as server:
        balance = connect(server, recorder).fetch_balance()

    assert balance.amount == Decimal("110.00")
    assert str(balance.amount) == "110.00"
    assert balance.currency == "CNY"
    assert balance.details == {
        "granted_balance": Decimal("10.00"),
        "topped_up_balance": Decimal("100.00"),
        "is_available": Decimal(1),
    }
    assert canned.requests[0].path == "/user/balance"
    assert canned.requests[0].headers["authorization"] == f"Bearer {API_KEY}"


def test_usd_entry_is_preferred_and_other_currencies_stay_in_details(
    sandbox: DeepSeekSandbox, server: SandboxServer, recorder: Recorder
) -> None:
    sandbox.set_balance("USD", granted=Decimal("0"), topped_up=Decimal("25.5"))

    balance = connect(server, recorder).fetch_balance()

    assert balance.currency == "USD"
    assert balance.amount == Decimal("25.50")
    assert balance.details["topped_up_balance"] == Decimal("25.50")
    assert balance.details["total_balance_CNY"] == Decimal("110.00")


def test_unavailable_balance_is_reported_as_zero_in_details(
    sandbox: DeepSeekSandbox, server: SandboxServer, recorder: Recorder
) -> None:
    sandbox.spend(Decimal("110.00"))

    balance = connect(server, recorder).fetch_balance()

    assert balance.amount == Decimal("0.00")
    assert balance.details["is_available"] == Decimal(0)


def test_spending_draws_on_the_granted_balance_first(
    sandbox: DeepSeekSandbox, server: SandboxServer, recorder: Recorder
) -> None:
    connector = connect(server, recorder)
    before = connector.fetch_balance()

    sandbox.spend(Decimal("12.34"))
    after = connector.fetch_balance()

    assert before.amount - after.amount == Decimal("12.34")
    assert after.details["granted_balance"] == Decimal("0.00")
    assert after.details["topped_up_balance"] == Decimal("97.66")


# --- what DeepSeek does not offer -------------------------------------------------------------


@pytest.mark.parametrize("method", ["fetch_costs", "fetch_usage"])
def test_cost_and_usage_history_are_not_supported(
    sandbox: DeepSeekSandbox, server: SandboxServer, recorder: Recorder, method: str
) -> None:
    with pytest.raises(NotSupported) as raised:
        getattr(connect(server, recorder), method)(last_week())

    assert raised.value.message == (
        "DeepSeek reports only a balance; consumption is derived from balance changes net of recorded purchases."
    )
    assert sandbox.requests == []


# --- credentials ----------------------------------------------------------------------------


def test_unknown_key_answered_401_is_rejected_with_advice(
    sandbox: DeepSeekSandbox, server: SandboxServer, recorder: Recorder
) -> None:
    sandbox.revoked_keys.add(API_KEY)
    connector = connect(server, recorder)

    with pytest.raises(CredentialsRejected) as raised:
        connector.fetch_balance()
    result = connector.check_credentials()

    assert "(401)" in raised.value.message
    assert "https://platform.deepseek.com/api_keys" in raised.value.message
    assert not result.ok
    assert recorder.delays == []


def test_check_credentials_accepts_a_valid_key(server: SandboxServer, recorder: Recorder) -> None:
    result = connect(server, recorder).check_credentials()

    assert result.ok
    assert "accepted" in result.message


def test_missing_key_is_rejected_without_a_request(
    sandbox: DeepSeekSandbox, server: SandboxServer, recorder: Recorder
) -> None:
    account = AccountRef(vendor="deepseek", credentials={}, api_base=server.url)

    with pytest.raises(CredentialsRejected, match="No DeepSeek API key is saved"):
        DeepSeekConnector(account, sleep=recorder).fetch_balance()
    assert sandbox.requests == []


# --- faults ---------------------------------------------------------------------------------


def test_rate_limit_waits_as_retry_after_says_then_succeeds(
    sandbox: DeepSeekSandbox, server: SandboxServer, recorder: Recorder
) -> None:
    sandbox.inject("rate_limit", retry_after=5)
    sandbox.inject("rate_limit", retry_after=2)

    balance = connect(server, recorder).fetch_balance()

    assert recorder.delays == [5.0, 2.0]
    assert balance.amount == Decimal("110.00")


def test_server_errors_outlasting_the_retries_raise_transient_error(
    sandbox: DeepSeekSandbox, server: SandboxServer, recorder: Recorder
) -> None:
    sandbox.inject("server_error", times=4)

    with pytest.raises(TransientVendorError) as raised:
        connect(server, recorder).fetch_balance()

    assert "DeepSeek /user/balance answered HTTP 503 after 4 attempts" in raised.value.message
    assert recorder.delays == [1.0, 2.0, 4.0]


def test_html_page_instead_of_json_is_malformed(
    sandbox: DeepSeekSandbox, server: SandboxServer, recorder: Recorder
) -> None:
    sandbox.inject("html")

    with pytest.raises(MalformedPayload, match="HTML page"):
        connect(server, recorder).fetch_balance()


def test_truncated_json_is_malformed(sandbox: DeepSeekSandbox, server: SandboxServer, recorder: Recorder) -> None:
    sandbox.inject("truncated")

    with pytest.raises(MalformedPayload, match="invalid or truncated JSON"):
        connect(server, recorder).fetch_balance()


def test_missing_total_balance_is_malformed_naming_the_field_path(recorder: Recorder) -> None:
    body = DOCUMENTED_BALANCE.replace('"total_balance": "110.00",', "")

    with serve(CannedDeepSeek(body)) as server, pytest.raises(MalformedPayload) as raised:
        connect(server, recorder).fetch_balance()

    assert "field 'balance_infos[0].total_balance' is missing" in raised.value.message
    assert raised.value.endpoint == "/user/balance"


def test_empty_balance_list_is_malformed(sandbox: DeepSeekSandbox, server: SandboxServer, recorder: Recorder) -> None:
    sandbox.remove_currency("CNY")

    with pytest.raises(MalformedPayload, match="'balance_infos' is empty"):
        connect(server, recorder).fetch_balance()


def test_no_credential_reaches_an_exception_or_the_log(
    sandbox: DeepSeekSandbox, server: SandboxServer, recorder: Recorder, caplog: pytest.LogCaptureFixture
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
    sandbox.revoked_keys.add(API_KEY)
    messages.append(connect(server, recorder).check_credentials().message)

    assert all(API_KEY not in message for message in messages)
    assert API_KEY not in caplog.text
    assert "retrying" in caplog.text


# --- the contract ---------------------------------------------------------------------------


def test_connector_is_registered_and_defaults_to_the_documented_base() -> None:
    connector = DeepSeekConnector(AccountRef(vendor="deepseek", credentials={"api_key": API_KEY}))

    assert connector_classes()["deepseek"] is DeepSeekConnector
    assert isinstance(connector, Connector)
    assert connector.api_base == "https://api.deepseek.com"
    assert connector.capabilities == frozenset({"balance"})
    assert [field.name for field in connector.credential_fields] == ["api_key"]


# --- the sandbox itself ---------------------------------------------------------------------


def test_sandbox_serves_the_documented_shape_and_deepseeks_401(server: SandboxServer) -> None:
    ok = httpx.get(f"{server.url}/user/balance", headers={"Authorization": f"Bearer {API_KEY}"})
    refused = httpx.get(f"{server.url}/user/balance", headers={"Authorization": "Bearer not-a-key"})

    assert ok.json() == {
        "is_available": True,
        "balance_infos": [
            {"currency": "CNY", "total_balance": "110.00", "granted_balance": "10.00", "topped_up_balance": "100.00"}
        ],
    }
    assert refused.status_code == 401
    assert refused.json()["error"]["type"] == "authentication_error"

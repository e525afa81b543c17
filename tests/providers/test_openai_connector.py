"""The OpenAI connector against the OpenAI sandbox, over real loopback HTTP (httpx is not mocked).

Expected amounts come either from the sandbox's own deterministic generator or from literal pages
of the reference (vendor-apis.md §1.5), so every Decimal is compared exactly.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from providers.connectors.base import (
    AccountRef,
    Connector,
    ConnectorError,
    CostRow,
    CredentialsRejected,
    CreditsExhausted,
    MalformedPayload,
    TransientVendorError,
    Window,
    connector_for,
)
from providers.connectors.openai import ADMIN_KEYS_URL, OpenAIConnector
from providers.sandbox.base import SandboxRequest, SandboxResponse, SandboxServer, serve
from providers.sandbox.openai import DIRECTIONS, MODELS, PROJECTS, USAGE_KINDS, OpenAISandbox, iter_days

ADMIN_KEY = "sk-admin-Zq8TESTsecretVALUE0123456789"
JAN_1 = datetime(2025, 1, 1, tzinfo=UTC)
EMPTY_PAGE = '{"object": "page", "data": [], "has_more": false, "next_page": null}'
REQUIRED_USAGE_ENDPOINTS = {"completions", "embeddings", "images", "audio_speeches", "audio_transcriptions"}

# vendor-apis.md §1.5, the spec's costs example, verbatim.
REFERENCE_COSTS_PAGE = """{
    "object": "page",
    "data": [
        {
            "object": "bucket",
            "start_time": 1730419200,
            "end_time": 1730505600,
            "results": [
                {
                    "object": "organization.costs.result",
                    "amount": {
                        "value": 0.06,
                        "currency": "usd"
                    },
                    "line_item": null,
                    "project_id": null,
                    "api_key_id": null,
                    "quantity": null,
                    "quantity_unit": null
                }
            ]
        }
    ],
    "has_more": false,
    "next_page": null
}"""

# vendor-apis.md §1.5, the spec's completions example, verbatim (it announces a second page).
REFERENCE_COMPLETIONS_PAGE = """{
    "object": "page",
    "data": [
        {
            "object": "bucket",
            "start_time": 1730419200,
            "end_time": 1730505600,
            "results": [
                {
                    "object": "organization.usage.completions.result",
                    "input_tokens": 1000,
                    "input_cached_tokens": 400,
                    "input_cache_write_tokens": 100,
                    "input_uncached_tokens": 500,
                    "output_tokens": 500,
                    "input_text_tokens": 400,
                    "output_text_tokens": 400,
                    "input_cached_text_tokens": 300,
                    "input_audio_tokens": 50,
                    "input_cached_audio_tokens": 50,
                    "output_audio_tokens": 50,
                    "input_image_tokens": 50,
                    "input_cached_image_tokens": 50,
                    "output_image_tokens": 50,
                    "num_model_requests": 5,
                    "project_id": null,
                    "user_id": null,
                    "api_key_id": null,
                    "model": null,
                    "batch": null,
                    "service_tier": null
                }
            ]
        }
    ],
    "has_more": true,
    "next_page": "page_AAAAAGdGxdEiJdKOAAAAAGcqsYA="
}"""


class LiteralSandbox(OpenAISandbox):
    """Serves fixed bodies, in order, per path (then an empty last page): for literal reference pages
    and hand-made malformed ones. Auth and knobs of the real sandbox do not apply."""

    def __init__(self, bodies: dict[str, list[str]]) -> None:
        super().__init__()
        self.bodies = {path: list(queue) for path, queue in bodies.items()}

    def route(self, request: SandboxRequest) -> SandboxResponse:
        queue = self.bodies.get(request.path)
        return SandboxResponse(200, queue.pop(0) if queue else EMPTY_PAGE)


def page(*buckets: dict[str, Any], next_page: str | None = None) -> str:
    return json.dumps(
        {"object": "page", "data": list(buckets), "has_more": next_page is not None, "next_page": next_page}
    )


def bucket(start: int, results: list[dict[str, Any]], end: int | None = None) -> dict[str, Any]:
    return {"object": "bucket", "start_time": start, "end_time": end or start + 86_400, "results": results}


def cost_result(value: Any, *, project: str | None = "proj_alpha", line_item: str | None = None) -> dict[str, Any]:
    return {
        "object": "organization.costs.result",
        "amount": {"value": value, "currency": "usd"},
        "line_item": line_item or "gpt-4o-2024-08-06, input",
        "project_id": project,
    }


@pytest.fixture
def sandbox() -> OpenAISandbox:
    return OpenAISandbox()


@pytest.fixture
def server(sandbox: OpenAISandbox) -> Iterator[SandboxServer]:
    with serve(sandbox) as running:
        yield running


@pytest.fixture
def delays() -> list[float]:
    """What the connector would have slept, so retries cost no time and can be asserted."""
    return []


@pytest.fixture
def connect(server: SandboxServer, delays: list[float]) -> Callable[..., OpenAIConnector]:
    def make(key: str = ADMIN_KEY, *, base: str | None = None) -> OpenAIConnector:
        account = AccountRef("openai", {"admin_key": key}, api_base=(base or server.url) + "/v1")
        return OpenAIConnector(account, sleep=delays.append)

    return make


@contextmanager
def literal(bodies: dict[str, list[str]], delays: list[float] | None = None) -> Iterator[OpenAIConnector]:
    with serve(LiteralSandbox(bodies)) as running:
        account = AccountRef("openai", {"admin_key": ADMIN_KEY}, api_base=running.url + "/v1")
        yield OpenAIConnector(account, sleep=(delays if delays is not None else []).append)


def fetch_literal_costs(*bodies: str) -> list[CostRow]:
    with literal({"/v1/organization/costs": list(bodies)}) as connector:
        return connector.fetch_costs(Window(JAN_1, JAN_1 + timedelta(days=1)))


def days(first: datetime, count: int) -> Window:
    return Window(first, first + timedelta(days=count))


def expected_costs(sandbox: OpenAISandbox, window: Window) -> dict[str, Decimal]:
    """The rows the sandbox's generator implies for whole days of the window."""
    expected = {}
    for day in iter_days(window.start.date(), window.end.date()):
        if sandbox.is_empty(day):
            continue
        for project in PROJECTS:
            for model in MODELS:
                for direction in DIRECTIONS:
                    line_item = f"{model}, {direction}"
                    expected[f"cost:{day}:{project}:{line_item}"] = sandbox.cost_amount(day, project, line_item)
    return expected


def by_key(rows: list[CostRow]) -> dict[str, Decimal]:
    return {row.source_key: row.billed_cost for row in rows}


# --- costs: values, parameters, pages and buckets --------------------------------------------


def test_costs_match_the_sandbox_generator_exactly(
    connect: Callable[..., OpenAIConnector], sandbox: OpenAISandbox
) -> None:
    window = days(JAN_1, 14)
    rows = connect().fetch_costs(window)

    assert by_key(rows) == expected_costs(sandbox, window)
    row = next(r for r in rows if r.source_key == "cost:2025-01-02:proj_beta:gpt-4o-mini-2024-07-18, output")
    line_item = "gpt-4o-mini-2024-07-18, output"
    assert row.billed_cost == sandbox.cost_amount(date(2025, 1, 2), "proj_beta", line_item)
    assert row.billing_currency == "USD"
    assert row.service_name == "gpt-4o-mini-2024-07-18"
    assert row.charge_description == line_item
    assert row.project == "proj_beta"
    assert row.consumed_quantity == Decimal(sandbox.cost_tokens(date(2025, 1, 2), "proj_beta", line_item))
    assert row.consumed_unit == "tokens"
    assert (row.charge_period_start, row.charge_period_end) == (
        datetime(2025, 1, 2, tzinfo=UTC),
        datetime(2025, 1, 3, tzinfo=UTC),
    )


def test_costs_request_sends_the_documented_parameters_and_bearer_key(
    connect: Callable[..., OpenAIConnector], sandbox: OpenAISandbox
) -> None:
    connect().fetch_costs(Window(JAN_1, datetime(2025, 1, 3, 12, tzinfo=UTC)))

    (request,) = sandbox.requests
    assert request.path == "/v1/organization/costs"
    assert request.headers["authorization"] == f"Bearer {ADMIN_KEY}"
    assert request.query == {
        "start_time": [str(int(JAN_1.timestamp()))],
        "end_time": [str(int(datetime(2025, 1, 3, 12, tzinfo=UTC).timestamp()))],
        "bucket_width": ["1d"],
        "group_by": ["line_item", "project_id"],
        "limit": ["31"],
    }


def test_pagination_follows_next_page_across_several_pages_without_duplicates(
    connect: Callable[..., OpenAIConnector], sandbox: OpenAISandbox
) -> None:
    window = days(JAN_1, 75)  # 75 daily buckets at 31 per page: three pages
    rows = connect().fetch_costs(window)

    assert len(sandbox.requests) == 3
    assert len(rows) == sum(sandbox.results_served)
    assert len({row.source_key for row in rows}) == len(rows)
    assert by_key(rows) == expected_costs(sandbox, window)
    first, *later = sandbox.requests
    assert "page" not in first.query
    cursors = [request.param("page") for request in later]
    assert all(cursor and cursor.startswith("page_") for cursor in cursors) and len(set(cursors)) == 2
    # Paging keeps every other parameter unchanged.
    assert all({k: v for k, v in request.query.items() if k != "page"} == first.query for request in later)


def test_window_starting_mid_day_is_floored_to_utc_midnight_and_keeps_the_same_keys(
    connect: Callable[..., OpenAIConnector], sandbox: OpenAISandbox
) -> None:
    end = datetime(2025, 1, 6, tzinfo=UTC)
    mid_day = connect().fetch_costs(Window(datetime(2025, 1, 2, 13, 37, 21, tzinfo=UTC), end))
    midnight = connect().fetch_costs(Window(datetime(2025, 1, 2, tzinfo=UTC), end))

    assert sandbox.requests[0].param("start_time") == str(int(datetime(2025, 1, 2, tzinfo=UTC).timestamp()))
    assert by_key(mid_day) == by_key(midnight) != {}
    assert min(row.charge_period_start for row in mid_day) == datetime(2025, 1, 2, tzinfo=UTC)


def test_partial_first_bucket_and_later_full_bucket_share_the_day_key() -> None:
    # The cookbook's real first bucket starts at the requested start_time, not at midnight.
    partial = fetch_literal_costs(page(bucket(1736616660, [cost_result(1.25)], end=1736640000)))
    full = fetch_literal_costs(page(bucket(1736553600, [cost_result(3.5)])))

    assert [row.source_key for row in partial] == [row.source_key for row in full]
    assert partial[0].source_key == "cost:2025-01-11:proj_alpha:gpt-4o-2024-08-06, input"
    assert partial[0].charge_period_start == datetime(2025, 1, 11, 17, 31, tzinfo=UTC)
    assert full[0].charge_period_start == datetime(2025, 1, 11, tzinfo=UTC)
    assert (partial[0].billed_cost, full[0].billed_cost) == (Decimal("1.25"), Decimal("3.5"))


def test_empty_buckets_yield_no_rows(connect: Callable[..., OpenAIConnector], sandbox: OpenAISandbox) -> None:
    window = days(JAN_1, 14)
    empty_days = [day for day in iter_days(date(2025, 1, 1), date(2025, 1, 15)) if sandbox.is_empty(day)]
    assert len(empty_days) == 2

    rows = connect().fetch_costs(window)

    assert {row.charge_period_start.date() for row in rows}.isdisjoint(empty_days)
    assert fetch_literal_costs(page(bucket(1730419200, []), bucket(1730505600, []))) == []


def test_amount_value_is_read_as_a_json_number_or_a_numeric_string(
    connect: Callable[..., OpenAIConnector], sandbox: OpenAISandbox, server: SandboxServer
) -> None:
    sandbox.string_amounts = True
    window = days(JAN_1, 3)
    raw = httpx.get(
        f"{server.url}/v1/organization/costs",
        params={"start_time": int(JAN_1.timestamp()), "group_by": ["line_item", "project_id"]},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    ).json()
    kinds = {type(result["amount"]["value"]) for result in raw["data"][0]["results"]}
    assert kinds == {str, float}  # the sandbox really mixes both

    assert by_key(connect().fetch_costs(window)) == expected_costs(sandbox, window)
    as_string, as_number = fetch_literal_costs(
        page(bucket(1730419200, [cost_result("0.06", project="proj_a"), cost_result(0.06, project="proj_b")]))
    )
    assert as_string.billed_cost == as_number.billed_cost == Decimal("0.06")


def test_reference_costs_page_parses_to_exact_values() -> None:
    (row,) = fetch_literal_costs(REFERENCE_COSTS_PAGE)

    assert row == CostRow(
        source_key="cost:2024-11-01::",
        charge_period_start=datetime(2024, 11, 1, tzinfo=UTC),
        charge_period_end=datetime(2024, 11, 2, tzinfo=UTC),
        billed_cost=Decimal("0.06"),
        billing_currency="USD",
    )
    assert str(row.billed_cost) == "0.06"  # no float detour: not 0.059999999999999997779…


def test_unknown_fields_are_ignored() -> None:
    result = {
        **cost_result("12.50"),
        "organization_id": "org-abc",
        "quantity": 1200,
        "quantity_unit": "kilo_widgets",
        "future_field": {"nested": [1, 2.5]},
    }
    result["amount"]["exchange_rate"] = 1.0
    body = json.loads(page({**bucket(1730419200, [result]), "surprise": True}))
    body["organization_id"] = "org-abc"

    (row,) = fetch_literal_costs(json.dumps(body))

    assert (row.billed_cost, row.consumed_quantity, row.consumed_unit) == (
        Decimal("12.50"),
        Decimal(1200),
        "kilo_widgets",
    )


def test_same_day_project_and_line_item_twice_is_refused_rather_than_overwritten() -> None:
    body = page(bucket(1730419200, [cost_result("1.00"), cost_result("2.00")]))

    with pytest.raises(MalformedPayload, match="twice"):
        fetch_literal_costs(body)


def test_a_cursor_that_repeats_stops_the_listing() -> None:
    looping = page(bucket(1730419200, []), next_page="page_same")

    with pytest.raises(MalformedPayload, match="next_page cursor twice"):
        fetch_literal_costs(looping, looping, looping)


def test_restated_day_changes_only_that_days_amounts(
    connect: Callable[..., OpenAIConnector], sandbox: OpenAISandbox
) -> None:
    window = days(JAN_1, 6)
    before = by_key(connect().fetch_costs(window))
    sandbox.restate(date(2025, 1, 3))
    after = by_key(connect().fetch_costs(window))

    assert before.keys() == after.keys()
    restated = {key for key in before if key.startswith("cost:2025-01-03:")}
    assert len(restated) == 8
    assert all(before[key] != after[key] for key in restated)
    assert {k: v for k, v in before.items() if k not in restated} == {
        k: v for k, v in after.items() if k not in restated
    }
    assert after == expected_costs(sandbox, window)


# --- usage -------------------------------------------------------------------------------------


def test_usage_rows_match_the_sandbox_generator_per_metric(
    connect: Callable[..., OpenAIConnector], sandbox: OpenAISandbox
) -> None:
    window = days(JAN_1, 5)
    rows = connect().fetch_usage(window)

    units = {"num_model_requests": "requests"}
    mapped = {
        "input_tokens",
        "output_tokens",
        "input_cached_tokens",
        "num_model_requests",
        "images",
        "characters",
        "seconds",
    }
    expected = {}
    for kind, spec in USAGE_KINDS.items():
        for day in iter_days(date(2025, 1, 1), date(2025, 1, 6)):
            if sandbox.is_empty(day):
                continue
            for project in PROJECTS:
                for model in spec.models:
                    for metric in (name for name, _, _ in spec.metrics if name in mapped):
                        key = f"usage:{kind}:{day}:{project}:{model}:{units.get(metric, metric)}"
                        expected[key] = Decimal(sandbox.usage_value(kind, day, project, model, metric))
    assert {row.source_key: row.quantity for row in rows} == expected
    assert len(rows) == len(expected)
    assert {row.unit for row in rows if "completions" in row.source_key} == {
        "input_tokens",
        "output_tokens",
        "input_cached_tokens",
        "requests",
    }


def test_usage_queries_each_endpoint_grouped_by_model_and_project(
    connect: Callable[..., OpenAIConnector], sandbox: OpenAISandbox
) -> None:
    connect().fetch_usage(days(JAN_1, 2))

    paths = {request.path.removeprefix("/v1/organization/usage/") for request in sandbox.requests}
    assert paths >= REQUIRED_USAGE_ENDPOINTS
    for request in sandbox.requests:
        assert request.params("group_by") == ["model", "project_id"]
        assert request.param("bucket_width") == "1d"


def test_reference_completions_page_and_its_next_page_give_exact_usage(delays: list[float]) -> None:
    # The second page is shaped like a real bucket: no newer token fields, no input_cached_tokens.
    real_shape = {
        "object": "organization.usage.completions.result",
        "input_tokens": 7,
        "output_tokens": 3,
        "num_model_requests": 1,
        "project_id": "proj_x",
        "user_id": None,
        "api_key_id": None,
        "model": "gpt-4o-mini-2024-07-18",
        "batch": None,
    }
    second = page(bucket(1730505600, [real_shape]))
    bodies = {"/v1/organization/usage/completions": [REFERENCE_COMPLETIONS_PAGE, second]}
    with literal(bodies, delays) as connector:
        rows = connector.fetch_usage(days(datetime(2024, 11, 1, tzinfo=UTC), 2))

    assert {row.source_key: row.quantity for row in rows} == {
        "usage:completions:2024-11-01:::input_tokens": Decimal(1000),
        "usage:completions:2024-11-01:::output_tokens": Decimal(500),
        "usage:completions:2024-11-01:::input_cached_tokens": Decimal(400),
        "usage:completions:2024-11-01:::requests": Decimal(5),
        "usage:completions:2024-11-02:proj_x:gpt-4o-mini-2024-07-18:input_tokens": Decimal(7),
        "usage:completions:2024-11-02:proj_x:gpt-4o-mini-2024-07-18:output_tokens": Decimal(3),
        "usage:completions:2024-11-02:proj_x:gpt-4o-mini-2024-07-18:requests": Decimal(1),
    }


def test_usage_result_missing_a_required_metric_names_the_field() -> None:
    broken = {"object": "organization.usage.completions.result", "input_tokens": 7, "output_tokens": 3}
    bodies = {"/v1/organization/usage/completions": [page(bucket(1730419200, [broken]))]}

    with literal(bodies) as connector:
        with pytest.raises(MalformedPayload, match=r"data\[0\]\.results\[0\]\.num_model_requests' is missing"):
            connector.fetch_usage(days(datetime(2024, 11, 1, tzinfo=UTC), 1))


# --- credentials ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["sk-proj-abc123DEF456", "sk-abc123DEF456", "sk-svcacct-abc123DEF456"])
def test_project_or_user_key_is_refused_before_any_request(
    connect: Callable[..., OpenAIConnector], sandbox: OpenAISandbox, key: str
) -> None:
    connector = connect(key)

    with pytest.raises(CredentialsRejected) as costs_error:
        connector.fetch_costs(days(JAN_1, 1))
    with pytest.raises(CredentialsRejected):
        connector.fetch_usage(days(JAN_1, 1))
    check = connector.check_credentials()

    assert sandbox.requests == []
    message = costs_error.value.message
    assert "admin key" in message and "sk-admin-" in message and ADMIN_KEYS_URL in message
    assert key not in message
    assert not check.ok and ADMIN_KEYS_URL in check.message


@pytest.mark.parametrize(("key", "says"), [("", "No OpenAI admin key is set"), ("sk-admin-abc\ndef", "line breaks")])
def test_blank_or_garbled_key_is_refused_before_any_request(
    connect: Callable[..., OpenAIConnector], sandbox: OpenAISandbox, key: str, says: str
) -> None:
    with pytest.raises(CredentialsRejected, match=says):
        connect(key).fetch_costs(days(JAN_1, 1))
    assert sandbox.requests == []


def test_server_401_maps_to_credentials_rejected_with_the_admin_key_hint(
    connect: Callable[..., OpenAIConnector], sandbox: OpenAISandbox, delays: list[float]
) -> None:
    sandbox.revoked_keys.add(ADMIN_KEY)

    with pytest.raises(CredentialsRejected) as error:
        connect().fetch_costs(days(JAN_1, 1))

    assert "401" in error.value.message and ADMIN_KEYS_URL in error.value.message
    assert len(sandbox.requests) == 1 and delays == []


def test_check_credentials_reports_success_and_rejection(
    connect: Callable[..., OpenAIConnector], sandbox: OpenAISandbox
) -> None:
    good = connect().check_credentials()
    sandbox.revoked_keys.add(ADMIN_KEY)
    bad = connect().check_credentials()

    assert good.ok and "OpenAI" in good.message
    assert not bad.ok and ADMIN_KEYS_URL in bad.message
    assert [request.param("limit") for request in sandbox.requests] == ["1", "1"]


# --- vendor errors and faults --------------------------------------------------------------------


def test_insufficient_quota_raises_credits_exhausted_without_retry(
    connect: Callable[..., OpenAIConnector], sandbox: OpenAISandbox, delays: list[float]
) -> None:
    sandbox.credits_exhausted = True

    with pytest.raises(CreditsExhausted) as error:
        connect().fetch_costs(days(JAN_1, 3))

    assert len(sandbox.requests) == 1 and delays == []
    assert "credits are exhausted" in error.value.message and "top up" in error.value.message
    assert not error.value.retryable


def test_rate_limit_with_retry_after_is_honoured_then_succeeds(
    connect: Callable[..., OpenAIConnector], sandbox: OpenAISandbox, delays: list[float]
) -> None:
    window = days(JAN_1, 4)
    sandbox.inject("rate_limit", retry_after=7, times=2)

    rows = connect().fetch_costs(window)

    assert delays == [7.0, 7.0]
    assert len(sandbox.requests) == 3
    assert by_key(rows) == expected_costs(sandbox, window)


def test_server_errors_that_outlive_the_retries_raise_transient_error(
    connect: Callable[..., OpenAIConnector], sandbox: OpenAISandbox, delays: list[float]
) -> None:
    sandbox.inject("server_error", status=502, times=4)

    with pytest.raises(TransientVendorError, match="HTTP 502 after 4 attempts") as error:
        connect().fetch_costs(days(JAN_1, 2))

    assert error.value.retryable
    assert len(sandbox.requests) == 4
    assert delays == [1.0, 2.0, 4.0]  # exponential backoff when no Retry-After is given


def test_html_page_raises_malformed_payload_mentioning_html(
    connect: Callable[..., OpenAIConnector], sandbox: OpenAISandbox
) -> None:
    sandbox.inject("html")

    with pytest.raises(MalformedPayload, match="HTML"):
        connect().fetch_costs(days(JAN_1, 2))


def test_truncated_json_raises_malformed_payload(
    connect: Callable[..., OpenAIConnector], sandbox: OpenAISandbox
) -> None:
    sandbox.inject("truncated")

    with pytest.raises(MalformedPayload, match="truncated JSON"):
        connect().fetch_costs(days(JAN_1, 2))


@pytest.mark.parametrize(
    ("result", "field"),
    [
        ({"object": "organization.costs.result", "line_item": None, "project_id": None}, r"results\[0\]\.amount'"),
        (cost_result("twelve"), r"results\[0\]\.amount\.value'"),
        (cost_result(None), r"results\[0\]\.amount\.value'"),
        ({"object": "organization.costs.result", "amount": {"value": 1}}, r"results\[0\]\.amount\.currency'"),
    ],
)
def test_missing_or_non_numeric_amount_raises_malformed_payload_naming_the_field(
    result: dict[str, Any], field: str
) -> None:
    with pytest.raises(MalformedPayload, match=rf"field 'data\[0\]\.{field}"):
        fetch_literal_costs(page(bucket(1730419200, [result])))


def test_the_key_never_appears_in_errors_or_logs(
    connect: Callable[..., OpenAIConnector], sandbox: OpenAISandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    failures: list[ConnectorError] = []

    def capture(setup: Callable[[], object], key: str = ADMIN_KEY) -> None:
        setup()
        with pytest.raises(ConnectorError) as error:
            connect(key).fetch_costs(days(JAN_1, 2))
        failures.append(error.value)

    capture(lambda: sandbox.inject("rate_limit", times=4))
    capture(lambda: sandbox.inject("html"))
    capture(lambda: sandbox.inject("truncated"))
    capture(lambda: setattr(sandbox, "credits_exhausted", True))
    sandbox.credits_exhausted = False
    capture(lambda: sandbox.revoked_keys.add(ADMIN_KEY))  # a real 401 round-trip
    capture(lambda: None, key="sk-proj-Zq8TESTsecretVALUE0123456789")
    failures_text = " ".join(f"{error!s} {error!r} {error.args}" for error in failures)

    assert len(failures) == 6
    assert "Zq8TESTsecretVALUE" not in failures_text
    assert "Zq8TESTsecretVALUE" not in caplog.text
    assert "HTTP Request" in caplog.text or "retrying" in caplog.text  # the logs were captured at all
    assert "Zq8TESTsecretVALUE" not in repr(connect().account)


# --- contract and sandbox fidelity ----------------------------------------------------------------


def test_connector_is_registered_and_has_no_balance(server: SandboxServer) -> None:
    account = AccountRef("openai", {"admin_key": ADMIN_KEY}, api_base=server.url + "/v1")
    connector = connector_for(account, sleep=lambda _seconds: None)

    assert isinstance(connector, OpenAIConnector) and isinstance(connector, Connector)
    assert connector.fetch_balance() is None
    assert connector.capabilities == frozenset({"costs", "usage"})
    assert [field.name for field in connector.credential_fields] == ["admin_key"]
    assert OpenAIConnector(AccountRef("openai", {"admin_key": ADMIN_KEY})).api_base == "https://api.openai.com/v1"


def test_sandbox_serves_the_documented_shape_with_a_partial_first_bucket(server: SandboxServer) -> None:
    start = int(datetime(2025, 1, 2, 17, 31, tzinfo=UTC).timestamp())
    response = httpx.get(
        f"{server.url}/v1/organization/costs",
        params={"start_time": start, "limit": 2, "group_by": "project_id"},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    body = response.json()

    assert body["object"] == "page" and body["has_more"] is True and body["next_page"].startswith("page_")
    first, second = body["data"]
    assert (first["object"], first["start_time"], first["end_time"]) == ("bucket", start, second["start_time"])
    assert second["end_time"] - second["start_time"] == 86_400
    result = first["results"][0]
    assert result["object"] == "organization.costs.result" and result["organization_id"]
    assert result["project_id"] == "proj_alpha" and result["line_item"] is None and result["quantity"] is None


def test_sandbox_refuses_project_keys_and_unknown_parameters(server: SandboxServer) -> None:
    url = f"{server.url}/v1/organization/costs"
    project_key = httpx.get(url, params={"start_time": 0}, headers={"Authorization": "Bearer sk-proj-abc"})
    bracketed = httpx.get(
        url, params={"start_time": 0, "group_by[]": "project_id"}, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    )

    assert project_key.status_code == 401 and project_key.json()["error"]["code"] == "invalid_api_key"
    assert bracketed.status_code == 400 and "group_by[]" in bracketed.json()["error"]["message"]

"""Azure OpenAI connector against the Azure sandbox over real loopback HTTP."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from providers.connectors.azure import AzureOpenAIConnector
from providers.connectors.base import (
    AccountRef,
    CredentialsRejected,
    MalformedPayload,
    NotSupported,
    TransientVendorError,
    Window,
    connector_for,
)
from providers.sandbox.azure import DEFAULT_RECORDS, AzureSandbox
from providers.sandbox.base import SandboxServer

AUGUST_1_TO_4 = Window(datetime(2026, 8, 1, tzinfo=UTC), datetime(2026, 8, 4, tzinfo=UTC))
AOAI_RECORDS = [r for r in DEFAULT_RECORDS if r.service_name != "Storage"]

# The literal QueryResult example of the Cost Management spec (vendor-apis.md §5), long lines verbatim.
SPEC_EXAMPLE = """{
  "id": "providers/Microsoft.Billing/billingAccounts/70664866/providers/Microsoft.CostManagement/Query/ad67fd91-c131-4bda-9ba9-7187ecb1cebd",
  "name": "ad67fd91-c131-4bda-9ba9-7187ecb1cebd",
  "type": "microsoft.costmanagement/Query",
  "properties": {
    "nextLink": "https://management.azure.com/providers/Microsoft.Billing/billingAccounts/70664866/providers/Microsoft.CostManagement/Query?api-version=2021-10-01&$skiptoken=AQAAAA%3D%3D",
    "columns": [
      {"name": "PreTaxCost", "type": "Number"},
      {"name": "ResourceGroup", "type": "String"},
      {"name": "UsageDate", "type": "Number"},
      {"name": "Currency", "type": "String"}
    ],
    "rows": [
      [19.545363672276512, "JapanUnifia-Trial", 20180331, "USD"],
      [173.41979241290323, "RVIIOT-TRIAL", 20180331, "USD"]
    ]
  }
}"""  # noqa: E501


class SleepRecorder:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sandbox() -> AzureSandbox:
    return AzureSandbox()


@pytest.fixture
def server(sandbox: AzureSandbox) -> Iterator[SandboxServer]:
    running = SandboxServer(sandbox)
    # serve_forever's default 0.5 s poll makes every shutdown wait half a second; poll faster.
    running.thread = threading.Thread(target=running.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    running.start()
    yield running
    running.stop()


@pytest.fixture
def sleep() -> SleepRecorder:
    return SleepRecorder()


def make_connector(
    sandbox: AzureSandbox, server: SandboxServer, sleep: SleepRecorder, **overrides: str
) -> AzureOpenAIConnector:
    credentials = {**sandbox.credentials(server.url), **overrides}
    account = AccountRef(vendor="azure_openai", credentials=credentials, api_base=server.url)
    return AzureOpenAIConnector(account, sleep=sleep)


@pytest.fixture
def connector(sandbox: AzureSandbox, server: SandboxServer, sleep: SleepRecorder) -> Iterator[AzureOpenAIConnector]:
    connector = make_connector(sandbox, server, sleep)
    yield connector
    connector.close()


def query_requests(sandbox: AzureSandbox) -> list:
    return [r for r in sandbox.requests if "CostManagement" in r.path]


def test_token_is_acquired_with_client_credentials_and_sent_as_bearer(
    connector: AzureOpenAIConnector, sandbox: AzureSandbox
) -> None:
    connector.fetch_costs(AUGUST_1_TO_4)

    assert sandbox.token_requests == [
        {
            "grant_type": "client_credentials",
            "client_id": AzureSandbox.CLIENT_ID,
            "client_secret": AzureSandbox.CLIENT_SECRET,
            "scope": "https://management.azure.com/.default",
        }
    ]
    (query,) = query_requests(sandbox)
    bearer = query.headers["authorization"].removeprefix("Bearer ")
    assert bearer in sandbox.issued_tokens
    assert query.param("api-version") == "2025-03-01"
    assert query.path == f"/subscriptions/{AzureSandbox.SUBSCRIPTION_ID}/providers/Microsoft.CostManagement/query"


def test_token_is_reused_across_fetches_while_valid(connector: AzureOpenAIConnector, sandbox: AzureSandbox) -> None:
    connector.fetch_costs(AUGUST_1_TO_4)
    connector.fetch_costs(AUGUST_1_TO_4)

    assert len(sandbox.token_requests) == 1
    assert len(query_requests(sandbox)) == 2


def test_token_is_renewed_before_it_expires(sandbox: AzureSandbox, server: SandboxServer, sleep: SleepRecorder) -> None:
    now = [1000.0]
    account = AccountRef(vendor="azure_openai", credentials=sandbox.credentials(server.url), api_base=server.url)
    connector = AzureOpenAIConnector(account, sleep=sleep, clock=lambda: now[0])

    connector.fetch_costs(AUGUST_1_TO_4)
    now[0] += 3599 - 300  # the sandbox's tokens live 3599 s; renew within the last five minutes
    connector.fetch_costs(AUGUST_1_TO_4)

    assert len(sandbox.token_requests) == 2
    first, second = (q.headers["authorization"] for q in query_requests(sandbox))
    assert first != second


def test_query_asks_for_daily_actual_cost_of_azure_openai_only(
    connector: AzureOpenAIConnector, sandbox: AzureSandbox
) -> None:
    connector.fetch_costs(AUGUST_1_TO_4)

    (body,) = sandbox.query_bodies
    assert body["type"] == "ActualCost"
    assert body["timeframe"] == "Custom"
    # Azure's "to" is inclusive: the exclusive window end minus one second.
    assert body["timePeriod"] == {"from": "2026-08-01T00:00:00Z", "to": "2026-08-03T23:59:59Z"}
    assert body["dataset"]["granularity"] == "Daily"
    assert body["dataset"]["aggregation"] == {"totalCost": {"name": "Cost", "function": "Sum"}}
    assert [g["name"] for g in body["dataset"]["grouping"]] == list(AzureOpenAIConnector.GROUPING)
    assert body["dataset"]["filter"] == {
        "dimensions": {"name": "ServiceName", "operator": "In", "values": list(AzureOpenAIConnector.SERVICE_NAMES)}
    }


def test_costs_are_one_row_per_day_and_meter_with_exact_amounts(
    connector: AzureOpenAIConnector, sandbox: AzureSandbox
) -> None:
    rows = connector.fetch_costs(AUGUST_1_TO_4)

    assert len(rows) == 3 * len(AOAI_RECORDS)
    by_key = {(r.charge_period_start.date(), r.project, r.service_name): r for r in rows}
    for day in (date(2026, 8, 1), date(2026, 8, 2), date(2026, 8, 3)):
        for record in AOAI_RECORDS:
            row = by_key[(day, record.resource_id(AzureSandbox.SUBSCRIPTION_ID).lower(), record.meter_subcategory)]
            assert row.billed_cost == sandbox.day_cost(day, record)
            assert isinstance(row.billed_cost, Decimal)
            assert row.billing_currency == "USD"
            assert row.charge_period_end - row.charge_period_start == timedelta(days=1)
            assert row.charge_description == f"{record.meter_subcategory} ({record.account})"
    assert all(r.charge_period_start.tzinfo is UTC for r in rows)
    assert len({r.source_key for r in rows}) == len(rows)


def test_storage_and_other_services_are_filtered_out(connector: AzureOpenAIConnector) -> None:
    rows = connector.fetch_costs(AUGUST_1_TO_4)

    assert not any("datalake" in r.project for r in rows)


def test_shuffled_column_order_gives_the_same_rows(
    sandbox: AzureSandbox, server: SandboxServer, sleep: SleepRecorder
) -> None:
    baseline = make_connector(sandbox, server, sleep).fetch_costs(AUGUST_1_TO_4)

    sandbox.column_order = ["Currency", "MeterSubCategory", "UsageDate", "ResourceId", "Cost"]
    shuffled = make_connector(sandbox, server, sleep).fetch_costs(AUGUST_1_TO_4)

    assert shuffled == baseline
    assert sandbox.sent_columns[0] == ["Cost", "UsageDate", "ResourceId", "MeterSubCategory", "Currency"]
    assert sandbox.sent_columns[-1] == sandbox.column_order


def test_next_link_pages_are_followed_with_the_same_body(
    sandbox: AzureSandbox, server: SandboxServer, sleep: SleepRecorder
) -> None:
    sandbox.page_size = 2
    rows = make_connector(sandbox, server, sleep).fetch_costs(AUGUST_1_TO_4)

    queries = query_requests(sandbox)
    assert len(queries) == 5  # 9 rows, 2 per page
    assert queries[0].param("$skiptoken") is None
    assert all(q.param("$skiptoken") for q in queries[1:])
    assert all(q.json() == queries[0].json() for q in queries)
    assert len(rows) == 9
    assert len({r.source_key for r in rows}) == 9

    sandbox.page_size = 1000
    assert make_connector(sandbox, server, sleep).fetch_costs(AUGUST_1_TO_4) == rows


def test_no_content_answer_means_no_rows(sandbox: AzureSandbox, server: SandboxServer, sleep: SleepRecorder) -> None:
    sandbox.quiet_days = {date(2026, 8, 1), date(2026, 8, 2), date(2026, 8, 3)}

    rows = make_connector(sandbox, server, sleep).fetch_costs(AUGUST_1_TO_4)

    assert rows == []
    (query,) = query_requests(sandbox)
    assert query.method == "POST"


def test_days_without_spend_have_no_rows(sandbox: AzureSandbox, server: SandboxServer, sleep: SleepRecorder) -> None:
    sandbox.quiet_days = {date(2026, 8, 2)}

    rows = make_connector(sandbox, server, sleep).fetch_costs(AUGUST_1_TO_4)

    assert {r.charge_period_start.date() for r in rows} == {date(2026, 8, 1), date(2026, 8, 3)}


def test_invalid_client_secret_is_rejected_without_echoing_the_secret(
    sandbox: AzureSandbox, server: SandboxServer, sleep: SleepRecorder
) -> None:
    secret = "wrong~secret~Xy9"
    connector = make_connector(sandbox, server, sleep, client_secret=secret)

    with pytest.raises(CredentialsRejected) as caught:
        connector.fetch_costs(AUGUST_1_TO_4)

    message = str(caught.value)
    assert secret not in message
    assert AzureSandbox.CLIENT_SECRET not in message
    assert "invalid_client" in message and "AADSTS7000215" in message
    assert "client secret" in message and "Cost Management Reader" in message
    assert query_requests(sandbox) == []
    assert sleep.calls == []


def test_check_credentials_reports_a_rejected_secret_and_accepts_a_good_one(
    sandbox: AzureSandbox, server: SandboxServer, sleep: SleepRecorder
) -> None:
    bad = make_connector(sandbox, server, sleep, client_secret="nope").check_credentials()
    good = make_connector(sandbox, server, sleep).check_credentials()

    assert not bad.ok and "Cost Management Reader" in bad.message and "nope" not in bad.message
    assert good.ok and AzureSandbox.SUBSCRIPTION_ID in good.message


def test_unknown_tenant_points_at_the_tenant_id(
    sandbox: AzureSandbox, server: SandboxServer, sleep: SleepRecorder
) -> None:
    connector = make_connector(sandbox, server, sleep, token_url=f"{server.url}/other-tenant/oauth2/v2.0/token")

    with pytest.raises(CredentialsRejected, match=r"tenant\) ID"):
        connector.fetch_costs(AUGUST_1_TO_4)


def test_missing_cost_management_role_is_rejected_with_a_hint(
    sandbox: AzureSandbox, server: SandboxServer, sleep: SleepRecorder
) -> None:
    sandbox.has_cost_reader_role = False

    with pytest.raises(CredentialsRejected, match="Cost Management Reader") as caught:
        make_connector(sandbox, server, sleep).fetch_costs(AUGUST_1_TO_4)

    assert "403" in str(caught.value)


def test_missing_credential_is_named(sandbox: AzureSandbox, server: SandboxServer, sleep: SleepRecorder) -> None:
    with pytest.raises(CredentialsRejected, match=r"subscription_id"):
        make_connector(sandbox, server, sleep, subscription_id=" ").fetch_costs(AUGUST_1_TO_4)


def test_plain_http_token_url_off_this_machine_is_refused(
    sandbox: AzureSandbox, server: SandboxServer, sleep: SleepRecorder
) -> None:
    connector = make_connector(sandbox, server, sleep, token_url="http://login.example.test/t/oauth2/v2.0/token")

    with pytest.raises(CredentialsRejected, match="https://"):
        connector.fetch_costs(AUGUST_1_TO_4)
    assert sandbox.requests == []


def test_rate_limit_with_retry_after_is_honoured_then_rows_arrive(
    connector: AzureOpenAIConnector, sandbox: AzureSandbox, sleep: SleepRecorder
) -> None:
    sandbox.inject("rate_limit", path_contains="CostManagement", retry_after=7)

    rows = connector.fetch_costs(AUGUST_1_TO_4)

    assert sleep.calls == [7.0]
    assert len(rows) == 9
    assert len(query_requests(sandbox)) == 2


def test_rate_limited_token_endpoint_honours_retry_after(
    connector: AzureOpenAIConnector, sandbox: AzureSandbox, sleep: SleepRecorder
) -> None:
    sandbox.inject("rate_limit", path_contains="/oauth2/", retry_after=3)

    rows = connector.fetch_costs(AUGUST_1_TO_4)

    assert sleep.calls == [3.0]
    assert len(rows) == 9
    assert len(sandbox.token_requests) == 1  # the 429 was answered before the token route


def test_server_errors_that_outlast_the_retries_are_transient(
    connector: AzureOpenAIConnector, sandbox: AzureSandbox, sleep: SleepRecorder
) -> None:
    sandbox.inject("server_error", path_contains="CostManagement", times=4)

    with pytest.raises(TransientVendorError) as caught:
        connector.fetch_costs(AUGUST_1_TO_4)

    assert caught.value.retryable
    assert "503" in str(caught.value)
    assert len(query_requests(sandbox)) == 4
    assert sleep.calls == [1.0, 2.0, 4.0]


def test_html_page_is_a_malformed_payload(connector: AzureOpenAIConnector, sandbox: AzureSandbox) -> None:
    sandbox.inject("html", path_contains="CostManagement")

    with pytest.raises(MalformedPayload, match="HTML"):
        connector.fetch_costs(AUGUST_1_TO_4)


def test_html_from_the_token_endpoint_is_a_malformed_payload(
    connector: AzureOpenAIConnector, sandbox: AzureSandbox
) -> None:
    sandbox.inject("html", path_contains="/oauth2/")

    with pytest.raises(MalformedPayload, match="token_url"):
        connector.fetch_costs(AUGUST_1_TO_4)


def test_truncated_json_is_a_malformed_payload(connector: AzureOpenAIConnector, sandbox: AzureSandbox) -> None:
    sandbox.inject("truncated", path_contains="CostManagement")

    with pytest.raises(MalformedPayload, match="truncated"):
        connector.fetch_costs(AUGUST_1_TO_4)


def test_missing_cost_column_is_named_in_the_error(
    sandbox: AzureSandbox, server: SandboxServer, sleep: SleepRecorder
) -> None:
    sandbox.drop_columns = {"cost"}

    with pytest.raises(MalformedPayload) as caught:
        make_connector(sandbox, server, sleep).fetch_costs(AUGUST_1_TO_4)

    message = str(caught.value)
    assert "Cost or PreTaxCost or CostUSD" in message
    assert "UsageDate" in message  # the columns that did arrive are listed


def test_missing_usage_date_column_is_named_in_the_error(
    sandbox: AzureSandbox, server: SandboxServer, sleep: SleepRecorder
) -> None:
    sandbox.drop_columns = {"usagedate"}

    with pytest.raises(MalformedPayload, match="no UsageDate column"):
        make_connector(sandbox, server, sleep).fetch_costs(AUGUST_1_TO_4)


def test_missing_currency_column_is_named_in_the_error(
    sandbox: AzureSandbox, server: SandboxServer, sleep: SleepRecorder
) -> None:
    sandbox.drop_columns = {"currency"}

    with pytest.raises(MalformedPayload, match="no Currency column"):
        make_connector(sandbox, server, sleep).fetch_costs(AUGUST_1_TO_4)


def test_pretax_cost_column_and_billing_currency_are_read(
    sandbox: AzureSandbox, server: SandboxServer, sleep: SleepRecorder
) -> None:
    sandbox.cost_column = "PreTaxCost"
    sandbox.currency = "EUR"

    rows = make_connector(sandbox, server, sleep).fetch_costs(AUGUST_1_TO_4)

    assert {r.billing_currency for r in rows} == {"EUR"}
    assert sum(r.billed_cost for r in rows) == sum(
        sandbox.day_cost(date(2026, 8, d), rec) for d in (1, 2, 3) for rec in AOAI_RECORDS
    )


def test_cost_usd_column_is_us_dollars_even_without_a_currency_column(
    sandbox: AzureSandbox, server: SandboxServer, sleep: SleepRecorder
) -> None:
    sandbox.cost_column = "CostUSD"
    sandbox.drop_columns = {"currency"}

    rows = make_connector(sandbox, server, sleep).fetch_costs(AUGUST_1_TO_4)

    assert len(rows) == 9 and {r.billing_currency for r in rows} == {"USD"}


def test_literal_spec_example_is_read_exactly(
    sandbox: AzureSandbox, server: SandboxServer, sleep: SleepRecorder
) -> None:
    sandbox.replay(SPEC_EXAMPLE)
    sandbox.replay(None)  # the page its nextLink points to: nothing more
    window = Window(datetime(2018, 3, 1, tzinfo=UTC), datetime(2018, 4, 1, tzinfo=UTC))

    rows = make_connector(sandbox, server, sleep).fetch_costs(window)

    assert [(r.billed_cost, r.charge_period_start, r.billing_currency, r.project) for r in rows] == [
        (Decimal("19.545363672276512"), datetime(2018, 3, 31, tzinfo=UTC), "USD", "JapanUnifia-Trial"),
        (Decimal("173.41979241290323"), datetime(2018, 3, 31, tzinfo=UTC), "USD", "RVIIOT-TRIAL"),
    ]
    assert rows[0].charge_period_end == datetime(2018, 4, 1, tzinfo=UTC)
    assert rows[0].source_key != rows[1].source_key
    # The nextLink named management.azure.com; its path and query went to the configured host only.
    follow = query_requests(sandbox)[-1]
    assert (
        follow.path == "/providers/Microsoft.Billing/billingAccounts/70664866/providers/Microsoft.CostManagement/Query"
    )
    assert follow.param("$skiptoken") == "AQAAAA=="
    assert follow.param("api-version") == "2021-10-01"


def test_restated_day_changes_the_amount_under_the_same_source_key(
    connector: AzureOpenAIConnector, sandbox: AzureSandbox
) -> None:
    before = {r.source_key: r.billed_cost for r in connector.fetch_costs(AUGUST_1_TO_4)}
    sandbox.restate(date(2026, 8, 2))
    after = {r.source_key: r.billed_cost for r in connector.fetch_costs(AUGUST_1_TO_4)}

    assert before.keys() == after.keys()
    changed = {k for k in before if before[k] != after[k]}
    assert len(changed) == len(AOAI_RECORDS)
    assert all("20260802" in k for k in changed)


def test_partial_day_window_keeps_the_overlapping_days(connector: AzureOpenAIConnector, sandbox: AzureSandbox) -> None:
    window = Window(datetime(2026, 8, 1, 12, tzinfo=UTC), datetime(2026, 8, 2, 6, tzinfo=UTC))

    rows = connector.fetch_costs(window)

    assert {r.charge_period_start.date() for r in rows} == {date(2026, 8, 1), date(2026, 8, 2)}
    assert sandbox.query_bodies[-1]["timePeriod"] == {"from": "2026-08-01T12:00:00Z", "to": "2026-08-02T05:59:59Z"}


def test_usage_is_not_supported_and_there_is_no_balance(connector: AzureOpenAIConnector) -> None:
    with pytest.raises(NotSupported, match="not token counts"):
        connector.fetch_usage(AUGUST_1_TO_4)
    assert connector.fetch_balance() is None
    assert AzureOpenAIConnector.capabilities == frozenset({"costs"})


def test_connector_is_registered_under_its_slug(
    sandbox: AzureSandbox, server: SandboxServer, sleep: SleepRecorder
) -> None:
    account = AccountRef(vendor="azure_openai", credentials=sandbox.credentials(server.url), api_base=server.url)

    connector = connector_for(account, sleep=sleep)

    assert isinstance(connector, AzureOpenAIConnector)
    assert len(connector.fetch_costs(AUGUST_1_TO_4)) == 9
    secret_fields = {f.name for f in connector.credential_fields if f.secret}
    assert secret_fields == {"client_secret"}

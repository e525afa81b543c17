"""Vendor accounts through the API, and syncs over real loopback HTTP to the OpenAI sandbox."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from aggregator.tenancy.models import AuditEvent, Organization
from providers import credentials as vault
from providers.models import CostRecord, SyncRun, UsageRecord, VendorAccount
from providers.sandbox.base import SandboxServer, serve
from providers.sandbox.openai import OpenAISandbox
from providers.services import sync_run_execute, sync_run_request, vendor_account_create

ADMIN_KEY = "sk-admin-FAKE-sandbox-key-0123456789abcdef"
DAY = date(2026, 11, 10)
START = datetime(2026, 11, 10, tzinfo=UTC)
END = datetime(2026, 11, 13, tzinfo=UTC)


@pytest.fixture
def sandbox() -> Iterator[tuple[OpenAISandbox, SandboxServer]]:
    vendor = OpenAISandbox()
    with serve(vendor) as server:
        yield vendor, server


@pytest.fixture
def account(organization: Organization, sandbox: tuple[OpenAISandbox, SandboxServer]) -> VendorAccount:
    return vendor_account_create(
        organization=organization,
        vendor="openai",
        label="OpenAI prod",
        credentials={"admin_key": ADMIN_KEY},
        api_base=sandbox[1].url + "/v1",
    )


def _sync(account: VendorAccount, start: datetime = START, end: datetime = END) -> SyncRun:
    run = sync_run_request(account=account, trigger=SyncRun.Trigger.COMMAND, start=start, end=end)
    return sync_run_execute(sync_run_id=run.pk)


def _expected_total(vendor: OpenAISandbox, days: list[date]) -> Decimal:
    from providers.sandbox.openai import DIRECTIONS, MODELS, PROJECTS

    return sum(
        (
            vendor.cost_amount(day, project, f"{model}, {direction}")
            for day in days
            if not vendor.is_empty(day)
            for project in PROJECTS
            for model in MODELS
            for direction in DIRECTIONS
        ),
        Decimal(0),
    )


def test_creating_an_account_stores_credentials_encrypted_and_shows_only_a_mask(
    owner_client: APIClient, db: Any
) -> None:
    response = owner_client.post(
        "/api/v1/vendor-accounts/",
        {"vendor": "openai", "label": "OpenAI prod", "credentials": {"admin_key": ADMIN_KEY}},
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["credentials_masked"] == {"admin_key": "sk-admin-…def"}
    assert ADMIN_KEY not in response.content.decode()
    account = VendorAccount.objects.get(pk=body["id"])
    assert ADMIN_KEY not in account.credentials_encrypted
    assert vault.decrypt(account.credentials_encrypted) == {"admin_key": ADMIN_KEY}
    listing = owner_client.get("/api/v1/vendor-accounts/").content.decode()
    assert ADMIN_KEY not in listing and "sk-admin-…def" in listing
    assert ADMIN_KEY not in str(AuditEvent.objects.get(action="vendor_account.create").after)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"vendor": "openai", "label": "x", "credentials": {}}, "Admin key (admin_key) is required"),
        (
            {"vendor": "openai", "label": "x", "credentials": {"api_key": "sk-1"}},
            "Unknown credential field(s) for openai: api_key",
        ),
        ({"vendor": "nosuch", "label": "x", "credentials": {}}, "Unknown vendor 'nosuch'"),
        ({"vendor": "openai", "label": "x", "credentials": "sk-admin-x"}, "must be a JSON object"),
    ],
)
def test_bad_credentials_are_refused_with_a_clear_message_and_nothing_saved(
    owner_client: APIClient, payload: dict[str, Any], message: str
) -> None:
    response = owner_client.post("/api/v1/vendor-accounts/", payload, format="json")
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]
    assert VendorAccount.objects.count() == 0


def test_a_viewer_cannot_link_or_sync_accounts(viewer: Any, account: VendorAccount) -> None:
    client = APIClient()
    client.force_login(viewer)
    create = client.post(
        "/api/v1/vendor-accounts/",
        {"vendor": "openai", "label": "y", "credentials": {"admin_key": ADMIN_KEY}},
        format="json",
    )
    assert create.status_code == 403
    assert client.post(f"/api/v1/vendor-accounts/{account.pk}/sync/", {}, format="json").status_code == 403
    assert SyncRun.objects.count() == 0


def test_test_connection_checks_the_key_against_the_vendor(owner_client: APIClient, account: VendorAccount) -> None:
    response = owner_client.post(f"/api/v1/vendor-accounts/{account.pk}/test/")
    assert response.status_code == 200
    assert response.json()["ok"] is True
    url = f"/api/v1/vendor-accounts/{account.pk}/"
    owner_client.patch(url, {"credentials": {"admin_key": "sk-proj-FAKE-abc123456"}}, format="json")
    result = owner_client.post(f"/api/v1/vendor-accounts/{account.pk}/test/").json()
    assert result["ok"] is False
    assert "admin key" in result["message"].lower()
    assert "sk-proj-FAKE-abc123456" not in result["message"]


def test_sync_through_the_api_returns_the_run_and_writes_the_vendors_costs(
    owner_client: APIClient,
    account: VendorAccount,
    sandbox: tuple[OpenAISandbox, SandboxServer],
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = owner_client.post(
            f"/api/v1/vendor-accounts/{account.pk}/sync/",
            {"start": START.isoformat(), "end": END.isoformat()},
            format="json",
        )
    assert response.status_code == 202
    run_id = response.json()["id"]
    run = owner_client.get(f"/api/v1/sync-runs/{run_id}/").json()
    assert run["status"] == "succeeded", run
    days = [DAY + timedelta(days=i) for i in range(3)]
    total = sum(CostRecord.objects.filter(vendor_account=account).values_list("billed_cost", flat=True), Decimal(0))
    assert total == _expected_total(sandbox[0], days)
    assert run["rows_read"] == run["rows_written"] > 0
    assert UsageRecord.objects.filter(vendor_account=account).exists()
    account.refresh_from_db()
    assert account.sync_cursor == END and account.last_success_at is not None


def test_resyncing_an_unchanged_window_writes_nothing(account: VendorAccount) -> None:
    first = _sync(account)
    count = CostRecord.objects.count()
    second = _sync(account)
    assert first.rows_written > 0
    assert second.status == SyncRun.Status.SUCCEEDED
    assert second.rows_read == first.rows_read
    assert second.rows_written == 0
    assert CostRecord.objects.count() == count


def test_a_restated_day_updates_its_rows_in_place(
    account: VendorAccount, sandbox: tuple[OpenAISandbox, SandboxServer]
) -> None:
    vendor = sandbox[0]
    _sync(account)
    before = {r.source_key: (r.pk, r.billed_cost, r.charge_period_start.date()) for r in CostRecord.objects.all()}
    usage_before = dict(UsageRecord.objects.values_list("source_key", "quantity"))
    restated = DAY + timedelta(days=1)
    vendor.restate(restated)
    run = _sync(account)
    after = {r.source_key: (r.pk, r.billed_cost, r.charge_period_start.date()) for r in CostRecord.objects.all()}
    assert set(after) == set(before)
    changed = {k for k in after if after[k][1] != before[k][1]}
    assert changed and all(after[k][2] == restated for k in changed)
    assert all(after[k][0] == before[k][0] for k in after)
    usage_changed = {k for k, q in UsageRecord.objects.values_list("source_key", "quantity") if usage_before[k] != q}
    assert run.rows_written == len(changed) + len(usage_changed)
    day_total = sum((v[1] for v in after.values() if v[2] == restated), Decimal(0))
    assert day_total == _expected_total(vendor, [restated])


@pytest.mark.parametrize(
    ("fault", "kind", "fragment"),
    [
        ("html", "malformed_payload", "HTML"),
        ("truncated", "malformed_payload", "truncated JSON"),
    ],
)
def test_a_malformed_payload_fails_the_run_and_writes_nothing(
    account: VendorAccount, sandbox: tuple[OpenAISandbox, SandboxServer], fault: str, kind: str, fragment: str
) -> None:
    sandbox[0].inject(fault, path_contains="/usage/")
    run = _sync(account)
    assert run.status == SyncRun.Status.FAILED
    assert run.error_kind == kind
    assert fragment in run.error and "OpenAI" in run.error
    assert CostRecord.objects.count() == 0 and UsageRecord.objects.count() == 0
    account.refresh_from_db()
    assert account.sync_cursor is None and account.failure_streak == 1


def test_exhausted_credits_mark_the_account_and_are_not_retried(
    account: VendorAccount, sandbox: tuple[OpenAISandbox, SandboxServer]
) -> None:
    sandbox[0].credits_exhausted = True
    run = _sync(account)
    assert (run.status, run.error_kind) == (SyncRun.Status.FAILED, "credits_exhausted")
    assert len(sandbox[0].requests) == 1
    account.refresh_from_db()
    assert account.status == VendorAccount.Status.CREDITS_EXHAUSTED


def test_logs_of_a_failed_sync_never_contain_the_key(
    account: VendorAccount, sandbox: tuple[OpenAISandbox, SandboxServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sandbox[0].inject("server_error", times=10, retry_after=0)
    run = _sync(account)
    assert run.error_kind == "transient"
    assert ADMIN_KEY not in caplog.text
    assert ADMIN_KEY not in run.error


def test_rotation_reencrypts_every_account_so_the_old_key_can_go(account: VendorAccount, settings: Any) -> None:
    from cryptography.fernet import Fernet

    old_key = settings.CREDENTIALS_KEYS[0]
    new_key = Fernet.generate_key().decode()
    settings.CREDENTIALS_KEYS = [new_key, old_key]
    before = VendorAccount.objects.get(pk=account.pk).credentials_encrypted
    call_command("rotate_credentials", stdout=open("/dev/null", "w"))
    settings.CREDENTIALS_KEYS = [new_key]
    after = VendorAccount.objects.get(pk=account.pk).credentials_encrypted
    assert after != before
    assert vault.decrypt(after) == {"admin_key": ADMIN_KEY}
    with pytest.raises(vault.CredentialsKeyError):
        settings.CREDENTIALS_KEYS = [old_key]
        vault.decrypt(after)


def test_cost_records_filter_and_daily_rollup_sum_exactly(owner_client: APIClient, account: VendorAccount) -> None:
    _sync(account)
    records = list(CostRecord.objects.filter(charge_period_start__date=DAY))
    listing = owner_client.get(f"/api/v1/cost-records/?start={DAY}&end={DAY}&page_size=500").json()
    assert listing["count"] == len(records)
    first = listing["results"][0]
    assert set(first) >= {
        "billed_cost",
        "billing_currency",
        "charge_period_start",
        "service_name",
        "charge_description",
        "consumed_quantity",
        "consumed_unit",
        "vendor",
        "vendor_account",
        "project",
    }
    assert isinstance(first["billed_cost"], str)
    by_model = owner_client.get(
        f"/api/v1/cost-records/?model=gpt-4o-2024-08-06&project=proj_alpha&start={DAY}&end={DAY}"
    ).json()
    assert {r["service_name"] for r in by_model["results"]} <= {"gpt-4o-2024-08-06"}
    daily = owner_client.get(f"/api/v1/costs/daily/?start={DAY}&end={DAY}").json()["results"]
    assert daily == [
        {
            "date": str(DAY),
            "vendor": "openai",
            "billing_currency": "USD",
            "billed_cost": f"{sum((r.billed_cost for r in records), Decimal(0)):.10f}",
        }
    ]
    bad = owner_client.get("/api/v1/cost-records/?start=2026-11-12&end=2026-11-01")
    assert bad.status_code == 400 and "end must be on or after start" in bad.json()["error"]["message"]


class _BrokenCostsSandbox(OpenAISandbox):
    """Answers the costs endpoint with a page whose first result lacks a field or has a mistyped one."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__()
        self.body = body

    def route(self, request: Any) -> Any:
        from providers.sandbox.base import SandboxResponse

        if request.path.endswith("/organization/costs"):
            return SandboxResponse(200, self.body)
        return super().route(request)


def _page(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "object": "page",
        "has_more": False,
        "next_page": None,
        "data": [{"object": "bucket", "start_time": 1793577600, "end_time": 1793664000, "results": [result]}],
    }


@pytest.mark.parametrize(
    ("result", "field"),
    [
        ({"object": "organization.costs.result", "line_item": "gpt-4o, input"}, "amount"),
        ({"object": "organization.costs.result", "amount": {"value": "lots", "currency": "usd"}}, "amount.value"),
        ({"object": "organization.costs.result", "amount": {"value": [1], "currency": "usd"}}, "amount.value"),
    ],
)
def test_missing_or_mistyped_fields_fail_the_run_naming_the_field(
    organization: Organization, result: dict[str, Any], field: str
) -> None:
    with serve(_BrokenCostsSandbox(_page(result))) as server:
        account = vendor_account_create(
            organization=organization,
            vendor="openai",
            label="broken",
            credentials={"admin_key": ADMIN_KEY},
            api_base=server.url + "/v1",
        )
        run = _sync(account)
    assert (run.status, run.error_kind) == (SyncRun.Status.FAILED, "malformed_payload")
    assert field in run.error and "/organization/costs" in run.error
    assert CostRecord.objects.count() == 0 and UsageRecord.objects.count() == 0


def test_running_a_finished_sync_again_changes_nothing(account: VendorAccount, sandbox: Any) -> None:
    run = _sync(account)
    requests = len(sandbox[0].requests)
    again = sync_run_execute(sync_run_id=run.pk)
    assert (again.status, again.rows_written, again.finished_at) == (run.status, run.rows_written, run.finished_at)
    assert len(sandbox[0].requests) == requests


def test_a_sync_interrupted_mid_way_is_simply_done_again(account: VendorAccount) -> None:
    run = sync_run_request(account=account, trigger=SyncRun.Trigger.COMMAND, start=START, end=END)
    SyncRun.objects.filter(pk=run.pk).update(status=SyncRun.Status.RUNNING)  # a worker died here
    done = sync_run_execute(sync_run_id=run.pk)
    assert done.status == SyncRun.Status.SUCCEEDED
    assert done.rows_written == CostRecord.objects.count() + UsageRecord.objects.count()


def test_only_due_accounts_with_something_to_fetch_are_queued(organization: Organization, sandbox: Any) -> None:
    from django.utils import timezone

    from providers.services import vendor_accounts_sync_due

    now = timezone.now()
    due = vendor_account_create(
        organization=organization,
        vendor="openai",
        label="due",
        credentials={"admin_key": ADMIN_KEY},
        api_base=sandbox[1].url + "/v1",
    )
    fresh = vendor_account_create(
        organization=organization,
        vendor="openai",
        label="fresh",
        credentials={"admin_key": ADMIN_KEY},
        api_base=sandbox[1].url + "/v1",
    )
    VendorAccount.objects.filter(pk=fresh.pk).update(last_sync_at=now - timedelta(minutes=10))
    disabled = vendor_account_create(
        organization=organization, vendor="openai", label="off", credentials={"admin_key": ADMIN_KEY}
    )
    VendorAccount.objects.filter(pk=disabled.pk).update(status=VendorAccount.Status.DISABLED)
    vendor_account_create(organization=organization, vendor="file_import", label="Mistral", credentials={})
    runs = vendor_accounts_sync_due(now=now)
    assert [r.vendor_account_id for r in runs] == [due.pk]
    # A run already in flight is not queued twice.
    assert vendor_accounts_sync_due(now=now) == []


def test_sync_command_reports_each_account_and_fails_when_one_fails(
    organization: Organization, account: VendorAccount, sandbox: Any
) -> None:
    from io import StringIO

    from django.core.management import CommandError

    out = StringIO()
    call_command("sync_vendor_accounts", org="acme", since="2026-11-10", stdout=out)
    assert "[1/1] acme / OpenAI prod (openai) … ok:" in out.getvalue()
    assert CostRecord.objects.filter(charge_period_start__gte=START).exists()
    sandbox[0].credits_exhausted = True
    with pytest.raises(CommandError, match="1 of 1 account"):
        call_command("sync_vendor_accounts", account=account.pk, stdout=StringIO())
    with pytest.raises(CommandError, match="not a date"):
        call_command("sync_vendor_accounts", since="10/11/2026")


def test_the_admin_shows_only_masks_and_takes_new_credentials_write_only(account: VendorAccount, db: Any) -> None:
    from django.test import Client

    from tests.factories import UserFactory

    operator = UserFactory(is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(operator)
    page = client.get(f"/admin/providers/vendoraccount/{account.pk}/change/").content.decode()
    assert ADMIN_KEY not in page and "sk-admin-…def" in page
    new_key = "sk-admin-FAKE-rotated-9999999999abc"
    form = {
        "organization": account.organization_id,
        "vendor": "openai",
        "label": account.label,
        "api_base": account.api_base,
        "sync_interval_minutes": 60,
        "trailing_days": 3,
        "new_credentials": f'{{"admin_key": "{new_key}"}}',
    }
    assert client.post(f"/admin/providers/vendoraccount/{account.pk}/change/", form).status_code == 302
    account.refresh_from_db()
    assert vault.decrypt(account.credentials_encrypted) == {"admin_key": new_key}
    assert new_key not in client.get(f"/admin/providers/vendoraccount/{account.pk}/change/").content.decode()

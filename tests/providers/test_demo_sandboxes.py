"""The offline demo: one account per vendor linked to the local sandboxes, all syncing."""

from __future__ import annotations

from typing import Any

import pytest

from aggregator.system.demo import demo_load, demo_sync_queue
from providers.models import BalanceObservation, CostRecord, SyncRun, VendorAccount
from providers.sandbox.base import SandboxServer
from providers.sandbox.demo import DEMO_SANDBOXES
from providers.services import sync_run_execute


@pytest.fixture
def sandboxes(settings: Any) -> Any:
    settings.SANDBOX_PORT_BASE = 0  # replaced below by the ports each server got
    servers = [SandboxServer(s.build()).start() for s in DEMO_SANDBOXES]
    yield servers
    for server in servers:
        server.stop()


def test_the_demo_links_one_account_per_vendor_and_every_one_syncs(db: Any, sandboxes: list[SandboxServer]) -> None:
    demo_load()
    demo_load()
    accounts = {a.vendor: a for a in VendorAccount.objects.filter(organization__slug="demo")}
    assert sorted(accounts) == ["anthropic", "azure_openai", "deepseek", "openai", "openrouter"]
    for sandbox, server in zip(DEMO_SANDBOXES, sandboxes, strict=True):
        VendorAccount.objects.filter(pk=accounts[sandbox.vendor].pk).update(api_base=server.url + sandbox.api_path)
        if sandbox.vendor == "azure_openai":
            from providers.services import vendor_account_update

            creds = sandbox.build().credentials(server.url)  # type: ignore[attr-defined]
            vendor_account_update(account=VendorAccount.objects.get(pk=accounts[sandbox.vendor].pk), credentials=creds)
    runs = demo_sync_queue()
    results = {r.vendor_account.vendor: sync_run_execute(sync_run_id=r.pk) for r in runs}
    assert {v: r.status for v, r in results.items()} == {v: SyncRun.Status.SUCCEEDED for v in accounts}
    for vendor in ("anthropic", "azure_openai", "openai", "openrouter"):
        assert CostRecord.objects.filter(vendor=vendor).exists(), vendor
    assert set(BalanceObservation.objects.values_list("vendor_account__vendor", flat=True)) == {
        "deepseek",
        "openrouter",
    }

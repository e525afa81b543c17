"""The offline demo: accounts at every sandbox vendor, synced, settled and invoiced."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from aggregator.system.demo import demo_load, demo_pipeline
from billing.invoicing.models import Invoice
from providers.models import BalanceObservation, CostRecord, SyncRun, VendorAccount
from providers.sandbox.base import SandboxServer
from providers.sandbox.demo import DEMO_SANDBOXES
from providers.services import vendor_account_update


@pytest.fixture
def sandboxes() -> Any:
    servers = [SandboxServer(s.build()).start() for s in DEMO_SANDBOXES]
    yield servers
    for server in servers:
        server.stop()


def test_the_demo_syncs_every_vendor_and_invoices_last_month_in_english_and_japanese(
    db: Any, sandboxes: list[SandboxServer]
) -> None:
    demo_load()
    demo_load()
    for slug in ("demo", "demo-jp"):
        accounts = {a.vendor: a for a in VendorAccount.objects.filter(organization__slug=slug)}
        assert sorted(accounts) == ["anthropic", "azure_openai", "deepseek", "openai", "openrouter"]
        for sandbox, server in zip(DEMO_SANDBOXES, sandboxes, strict=True):
            account = accounts[sandbox.vendor]
            VendorAccount.objects.filter(pk=account.pk).update(api_base=server.url + sandbox.api_path)
            if sandbox.vendor == "azure_openai":
                creds = sandbox.build().credentials(server.url)  # type: ignore[attr-defined]
                vendor_account_update(account=VendorAccount.objects.get(pk=account.pk), credentials=creds)
    demo_pipeline()
    assert set(SyncRun.objects.values_list("status", flat=True)) == {SyncRun.Status.SUCCEEDED}
    for vendor in ("anthropic", "azure_openai", "openai", "openrouter"):
        assert CostRecord.objects.filter(vendor=vendor).exists(), vendor
    assert set(BalanceObservation.objects.values_list("vendor_account__vendor", flat=True)) == {
        "deepseek",
        "openrouter",
    }
    english = Invoice.objects.get(organization__slug="demo")
    japanese = Invoice.objects.get(organization__slug="demo-jp")
    assert english.status == Invoice.Status.OPEN and english.number.startswith("INV-")
    assert {line.vendor for line in english.lines.all()} >= {"openai", "anthropic", "azure_openai", "openrouter"}
    assert english.total == sum((line.amount for line in english.lines.all()), Decimal(0))
    assert japanese.currency == "JPY" and japanese.locale == "ja"
    assert japanese.tax_breakdown[0]["rate"] == "10" and Decimal(japanese.tax_breakdown[0]["tax"]) > 0

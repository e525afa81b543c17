from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Any

from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from aggregator.tenancy.models import Organization
from providers.models import CostRecord, SyncRun, VendorAccount
from providers.services import vendor_account_create
from tests.factories import CostRecordFactory, VendorAccountFactory

GOOD = (
    "ChargePeriodStart,ChargePeriodEnd,BilledCost,BillingCurrency,ServiceName,ChargeDescription,"
    "ConsumedQuantity,ConsumedUnit,SubAccountId\n"
    "2026-11-01,2026-11-02,12.345678,EUR,mistral-large-latest,Input tokens,1250000,Tokens,proj-a\n"
    "2026-11-01,2026-11-02,3.5,EUR,mistral-large-latest,Output tokens,250000,Tokens,proj-a\n"
)


def _account(organization: Organization) -> VendorAccount:
    return vendor_account_create(organization=organization, vendor="file_import", label="Mistral", credentials={})


def _upload(client: APIClient, account: VendorAccount, text: str) -> Any:
    file = SimpleUploadedFile("costs.csv", text.encode(), content_type="text/csv")
    return client.post("/api/v1/imports/costs/", {"vendor_account": account.pk, "file": file}, format="multipart")


def test_a_valid_file_imports_every_row_with_exact_amounts(owner_client: APIClient, organization: Organization) -> None:
    account = _account(organization)
    response = _upload(owner_client, account, GOOD)
    assert response.status_code == 201, response.json()
    assert (response.json()["rows_read"], response.json()["rows_written"]) == (2, 2)
    amounts = sorted(CostRecord.objects.filter(vendor_account=account).values_list("billed_cost", flat=True))
    assert amounts == [Decimal("3.5"), Decimal("12.345678")]


def test_reimporting_the_same_file_adds_nothing(owner_client: APIClient, organization: Organization) -> None:
    account = _account(organization)
    _upload(owner_client, account, GOOD)
    again = _upload(owner_client, account, GOOD).json()
    assert (again["rows_read"], again["rows_written"]) == (2, 0)
    assert CostRecord.objects.filter(vendor_account=account).count() == 2


def test_a_file_with_a_bad_line_is_refused_whole_with_a_per_line_report(
    owner_client: APIClient, organization: Organization
) -> None:
    account = _account(organization)
    bad = GOOD + "2026-11-02,2026-11-03,twelve,EUR,mistral-small,Input,,,\n"
    response = _upload(owner_client, account, bad)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_csv"
    assert [(line["line"], line["column"]) for line in error["lines"]] == [(4, "BilledCost")]
    assert CostRecord.objects.count() == 0
    assert SyncRun.objects.count() == 0


def test_files_go_only_into_file_import_accounts_of_your_organization(
    owner_client: APIClient, organization: Organization, other_organization: Organization
) -> None:
    api_account = VendorAccountFactory(organization=organization, vendor="openai")
    response = _upload(owner_client, api_account, GOOD)
    assert response.status_code == 400
    assert "import files into a 'file_import' account" in response.json()["error"]["message"]
    theirs = _account(other_organization)
    assert _upload(owner_client, theirs, GOOD).status_code == 404
    assert CostRecord.objects.count() == 0


def test_focus_export_lists_the_period_with_focus_columns(owner_client: APIClient, organization: Organization) -> None:
    account = VendorAccountFactory(organization=organization, vendor="anthropic", label="Claude")
    CostRecordFactory(
        vendor_account=account,
        billed_cost=Decimal("1.2378912"),
        service_name="claude-opus-4-6",
        charge_description="Input tokens",
        project="wrkspc_1",
    )
    CostRecordFactory(
        organization=Organization.objects.create(slug="x", name="X", currency="USD"),
        vendor_account=VendorAccountFactory(),
    )
    response = owner_client.get("/api/v1/exports/focus.csv?start=2026-11-01&end=2026-11-30")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert 'filename="focus-acme-2026-11-01-2026-11-30.csv"' in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 1
    row = rows[0]
    assert (row["BilledCost"], row["BillingCurrency"], row["ServiceName"], row["ProviderName"]) == (
        "1.2378912",
        "USD",
        "claude-opus-4-6",
        "anthropic",
    )
    assert (row["ChargePeriodStart"], row["ChargePeriodEnd"], row["SubAccountId"]) == (
        "2026-11-01T00:00:00Z",
        "2026-11-02T00:00:00Z",
        "wrkspc_1",
    )
    assert row["ServiceCategory"] == "AI and Machine Learning" and row["ChargeCategory"] == "Usage"

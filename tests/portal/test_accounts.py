"""Portal vendor accounts: linking with a guided form, test connection, sync now, history,
changing and disconnecting; credentials never shown back; roles and tenant scoping."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from aggregator.tenancy.models import AuditEvent, Organization
from billing.ledger.services import credit_purchase_record
from providers import credentials as vault
from providers.models import SyncRun, VendorAccount
from providers.sandbox.base import SandboxServer, serve
from providers.sandbox.openai import OpenAISandbox
from tests.factories import SyncRunFactory, VendorAccountFactory
from tests.portal.conftest import text

ADMIN_KEY = "sk-admin-FAKE-portal-key-0123456789abcdef"
PROJECT_KEY = "sk-proj-FAKE-portal-key-0123456789abcdef"


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with serve(OpenAISandbox()) as server:
        yield server


@pytest.fixture
def linked(organization: Organization, sandbox: SandboxServer) -> VendorAccount:
    return VendorAccountFactory(
        organization=organization,
        label="OpenAI prod",
        api_base=sandbox.url + "/v1",
        credentials_encrypted=vault.encrypt({"admin_key": ADMIN_KEY}),
        credentials_masked={"admin_key": vault.mask(ADMIN_KEY)},
    )


def test_the_list_shows_status_and_the_last_sync(as_viewer: Client, organization: Organization) -> None:
    account = VendorAccountFactory(organization=organization, label="OpenAI prod", last_sync_at=timezone.now())
    SyncRunFactory(vendor_account=account, status=SyncRun.Status.SUCCEEDED)
    failed = SyncRunFactory(vendor_account=account, status=SyncRun.Status.FAILED)
    SyncRun.objects.filter(pk=failed.pk).update(created_at=timezone.now() + timedelta(seconds=5))
    page = text(as_viewer.get("/vendor-accounts/"))
    assert "OpenAI prod" in page and "Active" in page
    assert '<span class="badge run-failed">Failed</span>' in page
    assert 'id="link-openai"' not in page  # viewers cannot link accounts


@pytest.mark.parametrize(
    ("vendor", "fields", "hint"),
    [
        ("openai", ["admin_key"], "an admin key (sk-admin-…)"),
        ("anthropic", ["admin_key"], "an Admin key (sk-ant-admin01-…)"),
        (
            "azure_openai",
            ["tenant_id", "client_id", "client_secret", "subscription_id", "token_url"],
            "Cost Management Reader",
        ),
        ("openrouter", ["management_key"], "a management key (sk-or-v1-…)"),
        ("deepseek", ["api_key"], "an API key (sk-…)"),
    ],
)
def test_each_vendor_has_a_guided_form(as_admin: Client, vendor: str, fields: list[str], hint: str) -> None:
    page = text(as_admin.get(f"/vendor-accounts/link/?vendor={vendor}"))
    assert hint in page
    for name in ["label", *fields, "api_base"]:
        assert f'id="id_{name}"' in page
    assert 'id="link-submit"' in page


def test_the_link_page_without_a_vendor_offers_every_vendor(as_admin: Client) -> None:
    page = text(as_admin.get("/vendor-accounts/link/"))
    for vendor in ("openai", "anthropic", "azure_openai", "openrouter", "deepseek", "file_import"):
        assert f'id="link-{vendor}"' in page


def test_linking_stores_the_key_encrypted_and_never_shows_it(
    as_admin: Client, organization: Organization, billing_admin: Any
) -> None:
    response = as_admin.post(
        "/vendor-accounts/link/", {"vendor": "openai", "label": "OpenAI prod", "admin_key": ADMIN_KEY}, follow=True
    )
    account = VendorAccount.objects.get(organization=organization)
    assert (account.vendor, account.label) == ("openai", "OpenAI prod")
    assert vault.decrypt(account.credentials_encrypted) == {"admin_key": ADMIN_KEY}
    assert ADMIN_KEY not in account.credentials_encrypted
    page = text(response)
    assert ADMIN_KEY not in page and "sk-admin-…def" in page
    assert "OpenAI prod is linked" in page
    event = AuditEvent.objects.get(action="vendor_account.create")
    assert event.actor == billing_admin and ADMIN_KEY not in str(event.after)


def test_a_form_with_errors_says_what_is_missing_and_does_not_echo_the_key(
    as_admin: Client, organization: Organization
) -> None:
    response = as_admin.post("/vendor-accounts/link/", {"vendor": "openai", "label": "", "admin_key": ADMIN_KEY})
    assert response.status_code == 400
    page = text(response)
    assert "This field is required." in page and 'href="#id_label"' in page
    assert ADMIN_KEY not in page
    assert not VendorAccount.objects.exists()


def test_a_duplicate_label_is_refused_with_the_reason(as_admin: Client, organization: Organization) -> None:
    VendorAccountFactory(organization=organization, label="OpenAI prod")
    response = as_admin.post(
        "/vendor-accounts/link/", {"vendor": "openai", "label": "OpenAI prod", "admin_key": ADMIN_KEY}
    )
    assert response.status_code == 400
    assert "An account labelled &#x27;OpenAI prod&#x27; already exists: choose another label." in text(response)


def test_the_detail_page_shows_the_mask_and_the_sync_history(as_viewer: Client, linked: VendorAccount) -> None:
    SyncRunFactory(vendor_account=linked, status=SyncRun.Status.FAILED, error="OpenAI rejected the admin key (401)")
    page = text(as_viewer.get(f"/vendor-accounts/{linked.pk}/"))
    assert "admin_key: sk-admin-…def" in page
    assert "OpenAI rejected the admin key (401)" in page
    assert ADMIN_KEY not in page
    assert 'id="test-connection"' not in page and 'id="account-form"' not in page


def test_test_connection_reports_what_the_vendor_said(as_admin: Client, linked: VendorAccount) -> None:
    page = text(as_admin.post(f"/vendor-accounts/{linked.pk}/test/", follow=True))
    assert "Connection works: OpenAI accepted the admin key" in page


def test_test_connection_with_a_project_key_says_to_use_an_admin_key(
    as_admin: Client, organization: Organization, sandbox: SandboxServer
) -> None:
    account = VendorAccountFactory(
        organization=organization,
        api_base=sandbox.url + "/v1",
        credentials_encrypted=vault.encrypt({"admin_key": PROJECT_KEY}),
    )
    page = text(as_admin.post(f"/vendor-accounts/{account.pk}/test/", follow=True))
    assert "Connection failed:" in page and "admin key" in page
    assert PROJECT_KEY not in page


def test_sync_now_queues_a_run_that_fetches_the_costs(
    as_admin: Client, linked: VendorAccount, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = as_admin.post(f"/vendor-accounts/{linked.pk}/sync/", follow=True)
    run = SyncRun.objects.get(vendor_account=linked)
    assert (run.trigger, run.status) == (SyncRun.Trigger.PORTAL, SyncRun.Status.SUCCEEDED)
    assert linked.cost_records.exists()
    assert f"Sync {run.pk} is queued" in text(response)


def test_leaving_the_key_empty_keeps_it_and_a_new_one_replaces_it(as_admin: Client, linked: VendorAccount) -> None:
    as_admin.post(
        f"/vendor-accounts/{linked.pk}/", {"label": "OpenAI main", "admin_key": "", "api_base": linked.api_base}
    )
    linked.refresh_from_db()
    assert linked.label == "OpenAI main"
    assert vault.decrypt(linked.credentials_encrypted) == {"admin_key": ADMIN_KEY}
    new_key = "sk-admin-FAKE-portal-key-new-99999999zz"
    as_admin.post(f"/vendor-accounts/{linked.pk}/", {"label": "OpenAI main", "admin_key": new_key, "api_base": ""})
    linked.refresh_from_db()
    assert vault.decrypt(linked.credentials_encrypted) == {"admin_key": new_key}
    assert linked.credentials_masked == {"admin_key": "sk-admin-…9zz"}


def test_disconnecting_an_account_with_money_history_keeps_it_disabled(as_admin: Client, linked: VendorAccount) -> None:
    credit_purchase_record(
        vendor_account=linked, amount=Decimal("100"), currency="USD", kind="purchase", effective_at=timezone.now()
    )
    page = text(as_admin.post(f"/vendor-accounts/{linked.pk}/disconnect/", follow=True))
    linked.refresh_from_db()
    assert linked.status == VendorAccount.Status.DISABLED
    assert vault.decrypt(linked.credentials_encrypted) == {} and linked.credentials_masked == {}
    assert "OpenAI prod is disconnected" in page


def test_disconnecting_an_account_without_history_removes_it(as_admin: Client, linked: VendorAccount) -> None:
    page = text(as_admin.post(f"/vendor-accounts/{linked.pk}/disconnect/", follow=True))
    assert not VendorAccount.objects.filter(pk=linked.pk).exists()
    assert "OpenAI prod is removed." in page


@pytest.mark.parametrize("suffix", ["", "test/", "sync/", "disconnect/"])
def test_another_organizations_account_is_not_found(
    as_owner: Client, other_organization: Organization, suffix: str
) -> None:
    theirs = VendorAccountFactory(organization=other_organization)
    assert as_owner.post(f"/vendor-accounts/{theirs.pk}/{suffix}", {"label": "mine now"}).status_code == 404
    if not suffix:
        assert as_owner.get(f"/vendor-accounts/{theirs.pk}/").status_code == 404
    theirs.refresh_from_db()
    assert theirs.status == VendorAccount.Status.ACTIVE and theirs.label != "mine now"


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/vendor-accounts/link/", {"vendor": "openai", "label": "New", "admin_key": ADMIN_KEY}),
        ("/vendor-accounts/{pk}/", {"label": "Renamed", "admin_key": ADMIN_KEY}),
        ("/vendor-accounts/{pk}/test/", {}),
        ("/vendor-accounts/{pk}/sync/", {}),
        ("/vendor-accounts/{pk}/disconnect/", {}),
    ],
)
def test_a_viewer_cannot_change_accounts(
    as_viewer: Client, linked: VendorAccount, path: str, data: dict[str, str]
) -> None:
    before = VendorAccount.objects.values().get(pk=linked.pk)
    response = as_viewer.post(path.format(pk=linked.pk), data)
    assert response.status_code == 403
    assert "Your role (Viewer) cannot change this; it needs Billing admin or higher." in text(response)
    assert list(VendorAccount.objects.values()) == [before]
    assert not SyncRun.objects.exists()

"""The operator console: every page renders, staff roles decide who may move money, credentials stay
write-only, the ledger stays read-only, and operator actions are audited with before and after."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.admin import helpers
from django.contrib.auth.models import Group
from django.core import mail
from django.core.management import CommandError, call_command
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone

from aggregator.system.models import Heartbeat
from aggregator.tenancy.invitations import invitation_create
from aggregator.tenancy.models import AuditEvent, Invitation, Organization, User
from aggregator.tenancy.staff import FINANCE, STAFF_ROLES, SUPPORT, staff_roles_setup
from billing.alerts.models import AlertPolicy
from billing.fx.services import fx_rate_set_manual
from billing.invoicing.models import CreditNote, Invoice, InvoiceLine, NumberSeries
from billing.ledger.models import LedgerAccount, LedgerEntry, LedgerTransaction, Reconciliation, VendorFee
from billing.ledger.services import credit_purchase_record
from billing.payments.dunning.models import DunningCase, DunningPolicy, DunningStep
from billing.payments.records import Payment, WebhookEvent
from billing.topups.models import TopUpAttempt
from providers import credentials as vault
from providers.models import BalanceObservation, SyncRun, UsageRecord, VendorAccount
from tests.factories import (
    AlertFactory,
    ApiKeyFactory,
    CostRecordFactory,
    CreditNoteFactory,
    InvoiceFactory,
    MembershipFactory,
    OrganizationFactory,
    PaymentFactory,
    SyncRunFactory,
    TopUpFactory,
    UserFactory,
    VendorAccountFactory,
)

SECRET = "sk-admin-FAKE-console-secret-4242"
FACTORY_PDF_SHA256 = hashlib.sha256(b"%PDF-1.7 factory").hexdigest()
MASK = "sk-admin-…242"


def changelist(model: type[Any]) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


def change(obj: Any) -> str:
    return reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])


def as_request(user: User) -> Any:
    request = RequestFactory().get("/admin/")
    request.user = user
    return request


def post_action(client: Client, model: type[Any], action: str, *objs: Any) -> Any:
    return client.post(
        changelist(model), {"action": action, helpers.ACTION_CHECKBOX_NAME: [o.pk for o in objs]}, follow=True
    )


@pytest.fixture
def organization(db: Any) -> Organization:
    return OrganizationFactory(slug="acme", name="Acme Corp", currency="USD", billing_email="ap@acme.test")


@pytest.fixture
def account(organization: Organization) -> VendorAccount:
    return VendorAccountFactory(
        organization=organization,
        label="OpenAI production",
        credentials_encrypted=vault.encrypt({"admin_key": SECRET}),
        credentials_masked={"admin_key": MASK},
    )


@pytest.fixture
def invoice(organization: Organization) -> Invoice:
    return InvoiceFactory(
        organization=organization,
        number="INV-2026-000042",
        total=Decimal("120.00"),
        amount_due=Decimal("120.00"),
        pdf_sha256=FACTORY_PDF_SHA256,
    )


@pytest.fixture
def console_data(organization: Organization, account: VendorAccount, invoice: Invoice, superuser: User) -> None:
    """At least one row of every model the console shows."""
    MembershipFactory(organization=organization)
    ApiKeyFactory(organization=organization)
    invitation_create(organization=organization, email="new.member@acme.test", role="viewer", invited_by=superuser)
    run = SyncRunFactory(vendor_account=account, status=SyncRun.Status.SUCCEEDED)
    CostRecordFactory(vendor_account=account)
    now = datetime(2026, 11, 10, tzinfo=UTC)
    UsageRecord.objects.create(
        organization=organization,
        vendor_account=account,
        vendor="openai",
        source_key="u:1",
        charge_period_start=now,
        charge_period_end=now + timedelta(days=1),
        quantity=Decimal(1000),
        unit="tokens",
        updated_at=now,
    )
    observation = BalanceObservation.objects.create(
        organization=organization,
        vendor_account=account,
        amount=Decimal("50"),
        currency="USD",
        observed_at=now,
        sync_run=run,
    )
    Reconciliation.objects.create(
        organization=organization,
        observation=observation,
        ledger_balance=Decimal("50"),
        drift=Decimal("0"),
        tolerance=Decimal("1"),
    )
    credit_purchase_record(
        vendor_account=account,
        amount=Decimal("100"),
        currency="USD",
        kind="purchase",
        effective_at=now,
        actor=superuser,
    )
    VendorFee.objects.create(organization=organization, vendor="openai", percent=Decimal("2.5"))
    fx_rate_set_manual(day=date(2026, 11, 10), base="USD", quote="JPY", rate=Decimal("150.25"), actor=superuser)
    draft = InvoiceFactory(
        organization=organization,
        status=Invoice.Status.DRAFT,
        number=None,
        period_start=date(2026, 11, 1),
        period_end=date(2026, 11, 30),
    )
    InvoiceLine.objects.create(invoice=draft, description="OpenAI usage", amount=Decimal("12.00"))
    CreditNoteFactory(invoice=invoice)
    NumberSeries.objects.create(issuer=invoice.issuer, kind="invoice", year=2026, pattern="INV-{YYYY}-{seq:06}")
    PaymentFactory(invoice=invoice)
    WebhookEvent.objects.create(gateway="stripe", event_id="evt_console", type="customer.created", payload={})
    top_up = TopUpFactory(organization=organization, rule__vendor_account=account)
    TopUpAttempt.objects.create(
        organization=organization,
        top_up=top_up,
        number=1,
        gateway="fake",
        payment_method_reference="pm_ok_1",
        idempotency_key="topup:x:attempt:1",
    )
    AlertFactory(organization=organization, vendor_account=account)
    AlertPolicy.objects.create(organization=organization)
    Heartbeat.objects.create()
    DunningPolicy.objects.create(issuer=invoice.issuer, retry_days="1, 3")
    case = DunningCase.objects.create(
        organization=organization,
        invoice=invoice,
        opened_by="overdue",
        anchor_at=now,
        retry_days="1, 3",
        grace_days=7,
        steps_done=1,
        next_step_at=now + timedelta(3),
    )
    DunningStep.objects.create(organization=organization, case=case, number=1, kind="reminder", outcome="reminded")


# --- Every page renders --------------------------------------------------------------------------


def test_every_changelist_change_and_add_page_renders_for_a_superuser(
    console_data: None, superuser: User, root_client: Client
) -> None:
    checked = []
    for model, model_admin in admin.site._registry.items():
        response = root_client.get(changelist(model))
        assert response.status_code == 200, f"{model.__name__} changelist: {response.status_code}"
        obj = model._default_manager.order_by("pk").first()
        if obj is not None:
            response = root_client.get(change(obj))
            assert response.status_code == 200, f"{model.__name__} change page: {response.status_code}"
            checked.append(model)
        if model_admin.has_add_permission(as_request(superuser)):
            url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_add")
            assert root_client.get(url).status_code == 200, f"{model.__name__} add page"
    for model in (
        Organization,
        VendorAccount,
        SyncRun,
        Invoice,
        Payment,
        WebhookEvent,
        LedgerTransaction,
        AuditEvent,
        DunningCase,
        DunningPolicy,
        Invitation,
    ):
        assert model in checked


def test_the_dunning_queue_lists_the_steps_ahead(console_data: None, support_client: Client) -> None:
    case = DunningCase.objects.get()
    assert support_client.get(changelist(DunningCase), {"queue": "due"}).status_code == 200
    page = support_client.get(change(case)).content.decode()
    assert "Step 2 — 2026-11-13 00:00 UTC" in page and "Write-off — 2026-11-20 00:00 UTC" in page
    assert "Step 1 —" not in page


def test_the_console_index_links_to_the_operator_dashboard(root_client: Client) -> None:
    page = root_client.get("/admin/").content.decode()
    assert 'id="operator-dashboard-link"' in page and reverse("admin:dashboard") in page


def test_the_dashboard_needs_staff_with_a_money_view(db: Any, client: Client) -> None:
    assert client.get("/admin/dashboard/").status_code == 302  # to the sign-in page
    client.force_login(User.objects.create_user("helpdesk@operator.test", "pw", is_staff=True))
    assert client.get("/admin/dashboard/").status_code == 403


def test_an_organization_page_links_its_accounts_balances_and_invoices(
    console_data: None, root_client: Client, organization: Organization, invoice: Invoice
) -> None:
    page = root_client.get(change(organization)).content.decode()
    assert "OpenAI production" in page
    assert f"vendor_prepaid:{VendorAccount.objects.get().pk}" in page
    assert "INV-2026-000042" in page and change(invoice) in page
    assert SECRET not in page
    for model, count in ((Invoice, 2), (LedgerAccount, 2)):
        url = changelist(model) + f"?organization__id__exact={organization.pk}"
        assert url in page
        response = root_client.get(url)
        assert response.status_code == 200 and response.context["cl"].result_count == count


# --- Credentials are write-only ---------------------------------------------------------------------


def test_support_sees_vendor_accounts_with_masks_only(account: VendorAccount, support_client: Client) -> None:
    pages = [
        support_client.get(changelist(VendorAccount)),
        support_client.get(change(account)),
        support_client.get(change(account.organization)),
    ]
    assert [p.status_code for p in pages] == [200, 200, 200]
    html = "".join(p.content.decode() for p in pages)
    assert SECRET not in html
    assert account.credentials_encrypted not in html
    assert MASK in pages[1].content.decode()
    # View-only: no form to replace the credentials, no save button.
    assert 'name="new_credentials"' not in pages[1].content.decode()
    assert support_client.post(change(account), {"label": "renamed"}).status_code == 403


# --- Staff roles ---------------------------------------------------------------------------------------


def test_migrate_creates_the_staff_roles_with_their_permissions(db: Any) -> None:
    for role, permissions in STAFF_ROLES.items():
        group = Group.objects.get(name=role)
        held = {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.select_related("content_type")}
        assert held == set(permissions)


def test_support_may_not_void_credit_or_refund(roles: None, support: User) -> None:
    assert support.has_perm("billing.view_invoice") and support.has_perm("billing.resend_invoice")
    assert support.has_perm("providers.sync_vendoraccount")
    for permission in (
        "billing.void_invoice",
        "billing.issue_credit_note",
        "billing.finalize_invoice",
        "billing.refund_payment",
        "billing.add_fxrate",
        "billing.add_creditpurchase",
    ):
        assert not support.has_perm(permission), permission


def test_the_command_sets_up_the_roles_and_grants_one(db: Any, capsys: Any) -> None:
    Group.objects.filter(name=SUPPORT).delete()
    user = User.objects.create_user("helpdesk@operator.test", "pw")
    call_command("setup_staff_roles", grant=[[SUPPORT, "Helpdesk@operator.test"]])
    user.refresh_from_db()
    assert user.is_staff and user.groups.filter(name=SUPPORT).exists()
    assert "helpdesk@operator.test is staff in the support role." in capsys.readouterr().out
    with pytest.raises(CommandError, match="Unknown role 'auditor': use one of finance, support"):
        call_command("setup_staff_roles", grant=[["auditor", "helpdesk@operator.test"]])
    with pytest.raises(CommandError, match="No user has the email"):
        call_command("setup_staff_roles", grant=[[FINANCE, "nobody@operator.test"]])


def test_the_roles_follow_the_code_when_set_up_again(roles: None) -> None:
    finance = Group.objects.get(name=FINANCE)
    finance.permissions.clear()
    counts = staff_roles_setup()
    assert counts == {FINANCE: len(STAFF_ROLES[FINANCE]), SUPPORT: len(STAFF_ROLES[SUPPORT])}
    assert finance.permissions.count() == len(STAFF_ROLES[FINANCE])


# --- Money actions: refused to support, done by finance --------------------------------------------------


def test_support_cannot_void_an_invoice(invoice: Invoice, support_client: Client) -> None:
    response = post_action(support_client, Invoice, "void", invoice)
    assert response.status_code == 200
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.OPEN
    assert not AuditEvent.objects.filter(action="invoice.void").exists()
    assert support_client.post(reverse("admin:billing_invoice_void_detail", args=[invoice.pk]), {}).status_code == 403
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.OPEN


def test_support_cannot_issue_a_credit_note(invoice: Invoice, support_client: Client) -> None:
    url = reverse("admin:billing_invoice_credit_note_detail", args=[invoice.pk])
    assert support_client.get(url).status_code == 403
    assert support_client.post(url, {"amount": "10.00", "reason": "Goodwill"}).status_code == 403
    assert not CreditNote.objects.exists()
    page = support_client.get(change(invoice)).content.decode()
    assert url not in page and reverse("admin:billing_invoice_resend_detail", args=[invoice.pk]) in page


def test_support_cannot_refund_a_payment(invoice: Invoice, support_client: Client) -> None:
    payment = PaymentFactory(invoice=invoice)
    url = reverse("admin:billing_payment_refund_detail", args=[payment.pk])
    assert support_client.post(url, {"amount": "1.00"}).status_code == 403


def test_finance_voids_an_invoice_with_an_audit_row(invoice: Invoice, finance: User, finance_client: Client) -> None:
    url = reverse("admin:billing_invoice_void_detail", args=[invoice.pk])
    assert "An unpaid invoice is voided" in finance_client.get(url).content.decode()
    response = finance_client.post(url, {"reason": "Billed twice"})
    assert response.status_code == 302 and response["Location"] == change(invoice)
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.VOID
    event = AuditEvent.objects.get(action="invoice.void")
    assert (event.actor, event.organization, event.object_id) == (finance, invoice.organization, str(invoice.pk))
    assert event.before == {"status": "open"}
    assert event.after == {"status": "void", "reason": "Billed twice"}


def test_finance_issues_a_credit_note_from_the_invoice_page(
    invoice: Invoice, finance: User, finance_client: Client
) -> None:
    url = reverse("admin:billing_invoice_credit_note_detail", args=[invoice.pk])
    assert 'name="amount"' in finance_client.get(url).content.decode()
    response = finance_client.post(url, {"amount": "200.00", "reason": "Too much"})
    assert response.status_code == 200 and "at most the uncredited 120.00" in response.content.decode()
    response = finance_client.post(url, {"amount": "20.00", "reason": "Service outage"})
    assert response.status_code == 302
    note = CreditNote.objects.get()
    assert (note.amount, note.reason, note.invoice) == (Decimal("20.00"), "Service outage", invoice)
    event = AuditEvent.objects.get(action="credit_note.issue")
    assert event.actor == finance
    assert event.before["invoice"] == "INV-2026-000042" and Decimal(event.before["credited"]) == 0
    assert Decimal(event.after["amount"]) == Decimal(event.after["credited"]) == Decimal("20.00")


def test_finance_finalizes_a_draft_and_support_cannot(
    organization: Organization, finance: User, finance_client: Client, support_client: Client
) -> None:
    draft = InvoiceFactory(
        organization=organization, status=Invoice.Status.DRAFT, number=None, total=Decimal(0), amount_due=Decimal(0)
    )
    InvoiceLine.objects.create(invoice=draft, description="OpenAI usage", amount=Decimal("12.00"))
    url = reverse("admin:billing_invoice_finalize_detail", args=[draft.pk])
    assert support_client.post(url).status_code == 403
    post_action(support_client, Invoice, "finalize", draft)
    draft.refresh_from_db()
    assert draft.status == Invoice.Status.DRAFT and draft.number is None
    assert finance_client.post(url).status_code == 302
    draft.refresh_from_db()
    assert draft.status == Invoice.Status.OPEN and draft.number and draft.amount_due == Decimal("12.00")
    event = AuditEvent.objects.get(action="invoice.finalize")
    assert event.actor == finance and event.before == {"status": "draft"}
    assert event.after["status"] == "open" and event.after["number"] == draft.number


def test_refunding_with_a_credit_note_needs_the_refund_permission(invoice: Invoice, roles: None) -> None:
    from django.contrib.auth.models import Permission

    clerk = UserFactory(email="clerk@operator.test", is_staff=True)
    clerk.user_permissions.add(*Permission.objects.filter(codename__in=["view_invoice", "issue_credit_note"]))
    client = Client()
    client.force_login(clerk)
    url = reverse("admin:billing_invoice_credit_note_detail", args=[invoice.pk])
    response = client.post(url, {"amount": "5.00", "reason": "Goodwill", "refund": "on"})
    assert "Refunding needs the permission to refund payments" in response.content.decode()
    assert not CreditNote.objects.exists()
    assert client.post(url, {"amount": "5.00", "reason": "Goodwill"}).status_code == 302
    assert CreditNote.objects.get().amount == Decimal("5.00")


def test_finance_voids_from_the_list_and_finalized_only_once(invoice: Invoice, finance_client: Client) -> None:
    response = post_action(finance_client, Invoice, "void", invoice)
    assert "INV-2026-000042: voided." in response.content.decode()
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.VOID
    assert AuditEvent.objects.filter(action="invoice.void").count() == 1


def test_support_resends_an_invoice_email_with_an_audit_row(
    invoice: Invoice, support: User, support_client: Client
) -> None:
    response = post_action(support_client, Invoice, "resend", invoice)
    assert "INV-2026-000042: email sent." in response.content.decode()
    assert [m.to for m in mail.outbox] == [["ap@acme.test"]]
    event = AuditEvent.objects.get(action="invoice.resend")
    assert event.actor == support and event.before == {"emailed_at": None}
    assert event.after["emailed_at"] is not None


def test_finance_refunds_part_of_a_payment_with_an_audit_row(
    invoice: Invoice, finance: User, finance_client: Client
) -> None:
    payment = PaymentFactory(
        invoice=invoice,
        gateway="fake",
        amount=Decimal("120.00"),
        status=Payment.Status.SUCCEEDED,
        succeeded_at=timezone.now(),
    )
    url = reverse("admin:billing_payment_refund_detail", args=[payment.pk])
    assert "120.00 USD can be refunded" in finance_client.get(url).content.decode()
    response = finance_client.post(url, {"amount": "500", "reason": ""})
    assert response.status_code == 200 and "at most 120.00" in response.content.decode()
    assert finance_client.post(url, {"amount": "40.00", "reason": "Unused credits"}).status_code == 302
    payment.refresh_from_db()
    assert (payment.amount_refunded, payment.status) == (Decimal("40.00"), Payment.Status.SUCCEEDED)
    event = AuditEvent.objects.get(action="payment.refund")
    assert event.actor == finance and event.organization == invoice.organization
    assert event.before["status"] == "succeeded" and Decimal(event.before["amount_refunded"]) == 0
    assert Decimal(event.after["amount_refunded"]) == Decimal("40.00") and event.after["reason"] == "Unused credits"


# --- Vendor accounts: sync now and disable --------------------------------------------------------------


def test_support_disables_an_account_with_an_audit_row(
    account: VendorAccount, support: User, support_client: Client
) -> None:
    response = post_action(support_client, VendorAccount, "disable", account)
    assert "Disabled 1 account(s)." in response.content.decode()
    account.refresh_from_db()
    assert account.status == VendorAccount.Status.DISABLED
    event = AuditEvent.objects.get(action="vendor_account.disable")
    assert (event.actor, event.before, event.after) == (support, {"status": "active"}, {"status": "disabled"})


def test_sync_now_queues_a_run_for_support_but_not_for_finance(
    account: VendorAccount, support_client: Client, finance_client: Client, monkeypatch: Any
) -> None:
    queued: list[int] = []
    monkeypatch.setattr("providers.tasks.sync_run_execute_task.delay_on_commit", queued.append)
    post_action(finance_client, VendorAccount, "sync_now", account)
    assert not SyncRun.objects.exists()
    response = support_client.post(reverse("admin:providers_vendoraccount_sync_now_detail", args=[account.pk]))
    assert response.status_code == 302
    run = SyncRun.objects.get()
    assert queued == [run.pk] and run.trigger == SyncRun.Trigger.PORTAL
    assert AuditEvent.objects.get(action="vendor_account.sync_request").after == {"sync_run": run.pk}


# --- Read-only records -------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", [LedgerAccount, LedgerTransaction, LedgerEntry, AuditEvent, Payment, WebhookEvent])
def test_read_only_records_cannot_be_added_changed_or_deleted_by_anyone(
    model: type[Any], console_data: None, superuser: User, root_client: Client
) -> None:
    model_admin = admin.site._registry[model]
    request = as_request(superuser)
    obj = model._default_manager.first()
    assert obj is not None
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request, obj)
    assert not model_admin.has_delete_permission(request, obj)
    add_url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_add")
    assert root_client.post(add_url, {}).status_code == 403
    delete_url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_delete", args=[obj.pk])
    assert root_client.post(delete_url, {"post": "yes"}).status_code == 403
    assert model._default_manager.filter(pk=obj.pk).exists()


# --- Webhook events: process again -------------------------------------------------------------------------


def test_reprocess_runs_a_failed_event_once_and_leaves_processed_ones(
    finance: User, finance_client: Client, django_capture_on_commit_callbacks: Any
) -> None:
    failed = WebhookEvent.objects.create(
        gateway="stripe",
        event_id="evt_failed",
        type="customer.created",
        payload={},
        status=WebhookEvent.Status.FAILED,
        attempts=3,
        error="OperationalError: database is locked",
    )
    done = WebhookEvent.objects.create(
        gateway="stripe",
        event_id="evt_done",
        type="customer.created",
        payload={},
        status=WebhookEvent.Status.PROCESSED,
        attempts=1,
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = post_action(finance_client, WebhookEvent, "process_again", failed, done)
    assert "Queued 1 event(s) for processing. 1 were processed already" in response.content.decode()
    failed.refresh_from_db()
    done.refresh_from_db()
    assert (failed.status, failed.attempts) == (WebhookEvent.Status.IGNORED, 4)
    assert (done.status, done.attempts) == (WebhookEvent.Status.PROCESSED, 1)
    event = AuditEvent.objects.get(action="webhook_event.reprocess")
    assert event.actor == finance and event.object_id == str(failed.pk)
    assert event.before == {"status": "failed", "attempts": 3, "error": "OperationalError: database is locked"}
    with django_capture_on_commit_callbacks(execute=True):
        post_action(finance_client, WebhookEvent, "process_again", failed)
    failed.refresh_from_db()
    assert failed.attempts == 4


def test_support_cannot_reprocess_events(support_client: Client) -> None:
    failed = WebhookEvent.objects.create(
        gateway="stripe",
        event_id="evt_failed",
        type="customer.created",
        payload={},
        status=WebhookEvent.Status.FAILED,
        attempts=1,
    )
    post_action(support_client, WebhookEvent, "process_again", failed)
    failed.refresh_from_db()
    assert (failed.status, failed.attempts) == (WebhookEvent.Status.FAILED, 1)


# --- Audit log ----------------------------------------------------------------------------------------------


def test_editing_an_organization_is_audited_with_the_changed_fields(
    organization: Organization, superuser: User, root_client: Client
) -> None:
    form = {
        "slug": "acme",
        "name": "Acme Corp",
        "legal_name": "",
        "address": "",
        "country": "",
        "tax_id": "",
        "currency": "USD",
        "locale": "en",
        "billing_mode": "consolidated",
        "payment_terms_days": "30",
        "billing_email": "ap@acme.test",
        "invoice_grouping": "vendor_model",
        "invoice_review_days": "0",
        "fee_percent": "2.500",
        "credit_limit": "0",
        "issuer": "",
    }
    form.update(_inline_management(root_client.get(change(organization)).content.decode()))
    response = root_client.post(change(organization), form)
    assert response.status_code == 302, response.content.decode()[:3000]
    event = AuditEvent.objects.get(action="organization.change")
    assert event.actor == superuser and event.organization == organization
    assert event.before == {"payment_terms_days": 14, "fee_percent": "0.000"}
    assert event.after == {"payment_terms_days": 30, "fee_percent": "2.500"}


def test_adding_a_staff_user_is_audited_without_the_password(superuser: User, root_client: Client) -> None:
    password = "Correct-Horse-Battery-42"
    response = root_client.post(
        reverse("admin:tenancy_user_add"),
        {
            "email": "new.operator@operator.test",
            "password1": password,
            "password2": password,
            "usable_password": "true",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    event = AuditEvent.objects.get(action="user.add")
    assert event.actor == superuser and event.after == {"email": "new.operator@operator.test"}
    assert password not in str(list(AuditEvent.objects.values("before", "after")))


def _inline_management(page: str) -> dict[str, str]:
    """The management forms of the inline formsets on a change page, as posted back unchanged."""
    import re

    fields = {}
    for name in re.findall(r'name="([^"]+-(?:TOTAL|INITIAL|MIN_NUM|MAX_NUM)_FORMS)"', page):
        value = re.search(rf'name="{re.escape(name)}"[^>]*value="(\d+)"', page)
        fields[name] = value.group(1) if value else "0"
    for name in fields:
        if name.endswith("TOTAL_FORMS"):
            fields[name] = fields[name.replace("TOTAL", "INITIAL")]
    return fields


def test_the_audit_log_shows_before_and_after_and_filters(
    console_data: None, invoice: Invoice, finance: User, finance_client: Client
) -> None:
    finance_client.post(reverse("admin:billing_invoice_void_detail", args=[invoice.pk]), {"reason": "Duplicate"})
    event = AuditEvent.objects.get(action="invoice.void")
    page = finance_client.get(change(event)).content.decode()
    assert "Before" in page and "After" in page and "open" in page and "void" in page and "Duplicate" in page

    def listed(**query: Any) -> list[str]:
        response = finance_client.get(changelist(AuditEvent), query)
        assert response.status_code == 200
        return sorted(e.action for e in response.context["cl"].result_list)

    assert listed(action="invoice.void") == ["invoice.void"]
    assert listed(actor__id__exact=finance.pk) == ["invoice.void"]
    organization = invoice.organization
    assert "fx_rate.set_manual" not in listed(organization__id__exact=organization.pk)
    assert "credit_purchase.record" in listed(organization__id__exact=organization.pk)
    assert len(listed(created_at__gte="2000-01-01")) == AuditEvent.objects.count()

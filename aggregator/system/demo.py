"""The demo data that `make run` loads: an operator, a demo customer and its owner.

Loading twice changes nothing but the demo passwords, which are reset so the printed ones work.
Later parts of the product add their demo data here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from aggregator.tenancy.models import Issuer, Membership, Organization, Role, User
from providers.models import SyncRun, VendorAccount
from providers.sandbox.demo import DEMO_SANDBOXES
from providers.services import sync_run_request, vendor_account_create

OPERATOR_EMAIL = "operator@example.com"
CUSTOMER_EMAIL = "customer@example.com"
# Demo-only credentials for a local, offline installation; printed on screen by `make run`.
OPERATOR_PASSWORD = "operator-demo-pass"  # noqa: S105
CUSTOMER_PASSWORD = "customer-demo-pass"  # noqa: S105


@dataclass(frozen=True)
class DemoLogins:
    operator_email: str
    operator_password: str
    customer_email: str
    customer_password: str
    organization_slug: str


@transaction.atomic
def demo_load() -> DemoLogins:
    issuer, _ = Issuer.objects.get_or_create(
        name="Demo Operator Ltd",
        defaults={
            "legal_name": "Demo Operator Ltd",
            "country": "US",
            "address": "1 Market Street\nSan Francisco, CA",
            "email": "billing@example.com",
            "is_default": True,
        },
    )
    operator = User.objects.filter(email=OPERATOR_EMAIL).first() or User.objects.create_superuser(OPERATOR_EMAIL)
    operator.is_staff = operator.is_superuser = True
    operator.set_password(OPERATOR_PASSWORD)
    operator.save()

    organization, _ = Organization.objects.get_or_create(
        slug="demo",
        defaults={
            "name": "Demo Customer Inc.",
            "legal_name": "Demo Customer Inc.",
            "currency": "USD",
            "country": "US",
            "address": "500 Howard Street\nSan Francisco, CA",
            "issuer": issuer,
            "billing_email": CUSTOMER_EMAIL,
        },
    )
    customer = User.objects.filter(email=CUSTOMER_EMAIL).first() or User.objects.create_user(CUSTOMER_EMAIL)
    customer.full_name = customer.full_name or "Dana Demo"
    customer.set_password(CUSTOMER_PASSWORD)
    customer.save()
    Membership.objects.get_or_create(organization=organization, user=customer, defaults={"role": Role.OWNER})
    demo_vendor_accounts(organization=organization)
    return DemoLogins(OPERATOR_EMAIL, OPERATOR_PASSWORD, CUSTOMER_EMAIL, CUSTOMER_PASSWORD, organization.slug)


def demo_vendor_accounts(*, organization: Organization) -> list[VendorAccount]:
    """One account per vendor, linked to the local sandbox servers (`manage.py run_sandboxes`)."""
    accounts = []
    for sandbox in DEMO_SANDBOXES:
        account = VendorAccount.objects.filter(organization=organization, label=sandbox.label).first()
        if account is None:
            account = vendor_account_create(
                organization=organization,
                vendor=sandbox.vendor,
                label=sandbox.label,
                credentials=sandbox.credentials(),
                api_base=sandbox.url + sandbox.api_path,
            )
        accounts.append(account)
    return accounts


def demo_sync_queue() -> list[SyncRun]:
    """Queue a sync of every demo account with a month of history (the sandboxes serve any window)."""
    organization = Organization.objects.get(slug="demo")
    start = timezone.now() - timedelta(days=30)
    with transaction.atomic():
        return [
            sync_run_request(account=account, trigger=SyncRun.Trigger.COMMAND, start=start)
            for account in VendorAccount.objects.filter(organization=organization).exclude(vendor="file_import")
        ]

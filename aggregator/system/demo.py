"""The demo data that `make run` loads: an operator, a demo customer and its owner.

Loading twice changes nothing but the demo passwords, which are reset so the printed ones work.
Later parts of the product add their demo data here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

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
# Console users in the staff roles (aggregator.tenancy.staff), with the operator's demo password.
STAFF_EMAILS = {"finance": "finance@example.com", "support": "support@example.com"}


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
    _demo_staff()

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

    # A Japanese customer of a Japanese issuing entity: qualified invoices in JPY, in Japanese.
    issuer_jp, _ = Issuer.objects.get_or_create(
        name="Demo Operator KK",
        defaults={
            "legal_name": "デモ・オペレーター株式会社",
            "country": "JP",
            "address": "東京都千代田区丸の内1-1-1",
            "email": "billing-jp@example.com",
            "tax_regime": Issuer.TaxRegime.JP_CONSUMPTION,
            "jp_registration_number": "T1234567890123",
        },
    )
    organization_jp, _ = Organization.objects.get_or_create(
        slug="demo-jp",
        defaults={
            "name": "デモ顧客株式会社",
            "legal_name": "デモ顧客株式会社",
            "currency": "JPY",
            "country": "JP",
            "locale": Organization.Locale.JA,
            "address": "大阪府大阪市北区梅田1-1-1",
            "issuer": issuer_jp,
            "billing_email": CUSTOMER_EMAIL,
        },
    )
    Membership.objects.get_or_create(organization=organization_jp, user=customer, defaults={"role": Role.OWNER})
    demo_vendor_accounts(organization=organization_jp)
    demo_fx_rates()
    return DemoLogins(OPERATOR_EMAIL, OPERATOR_PASSWORD, CUSTOMER_EMAIL, CUSTOMER_PASSWORD, organization.slug)


def _demo_staff() -> None:
    from aggregator.tenancy.staff import staff_role_grant, staff_roles_setup

    staff_roles_setup()
    for role, email in STAFF_EMAILS.items():
        user = User.objects.filter(email=email).first() or User.objects.create_user(email)
        user.full_name = user.full_name or f"Demo {role.title()}"
        user.set_password(OPERATOR_PASSWORD)
        user.save()
        staff_role_grant(email=email, role=role)


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


# Fixed, plausible reference rates (1 EUR = …) entered as manual rates for the offline demo.
DEMO_EUR_RATES = {"USD": "1.0800", "JPY": "162.00", "CNY": "7.8000", "GBP": "0.8500"}


def demo_fx_rates(*, days: int = 120) -> None:
    """Manual EUR rates for the last ``days`` days, so settlement can convert offline."""
    from billing.fx.models import FxRate

    today = timezone.now().date()
    existing = set(FxRate.objects.filter(source=FxRate.Source.MANUAL, base="EUR").values_list("date", "quote"))
    FxRate.objects.bulk_create(
        [
            FxRate(
                date=today - timedelta(days=i), base="EUR", quote=quote, rate=Decimal(rate), source=FxRate.Source.MANUAL
            )
            for i in range(days)
            for quote, rate in DEMO_EUR_RATES.items()
            if (today - timedelta(days=i), quote) not in existing
        ]
    )


def demo_purchases(*, organization: Organization) -> None:
    """Credits bought at each vendor two months ago, expiring in a year (once per account)."""
    from billing.ledger.models import CreditPurchase
    from billing.ledger.services import credit_purchase_record

    start = timezone.now() - timedelta(days=62)
    for account in VendorAccount.objects.filter(organization=organization).exclude(vendor="file_import"):
        if CreditPurchase.objects.filter(vendor_account=account).exists():
            continue
        currency = "CNY" if account.vendor == "deepseek" else "USD"
        amount = Decimal("800") if currency == "CNY" else Decimal("1500")
        credit_purchase_record(
            vendor_account=account,
            amount=amount,
            currency=currency,
            kind="purchase",
            effective_at=start,
            expires_at=start + timedelta(days=365),
            note="Demo credits",
        )


def demo_pipeline(*, stdout: Any = None) -> None:
    """Everything a month of use produces, offline: sync last month and this month from the
    sandboxes, record purchases, settle, and close last month (finalized, PDF, email)."""
    from billing.invoicing.close import period_close
    from billing.ledger.flows import vendor_account_settle
    from providers.services import sync_run_execute

    today = timezone.now().date()
    first_of_last_month = (today.replace(day=1) - timedelta(days=1)).replace(day=1)
    since = datetime.combine(first_of_last_month, datetime.min.time(), tzinfo=UTC)
    for organization in Organization.objects.filter(slug__in=["demo", "demo-jp"]):
        demo_purchases(organization=organization)
        for account in VendorAccount.objects.filter(organization=organization).exclude(vendor="file_import"):
            run = sync_run_request(account=account, trigger=SyncRun.Trigger.COMMAND, start=since)
            run = sync_run_execute(sync_run_id=run.pk)
            vendor_account_settle(vendor_account_id=account.pk)
            if stdout:
                stdout.write(f"{organization.slug}/{account.label}: sync {run.status}, {run.rows_written} rows\n")
        invoice = period_close(organization=organization, period=f"{first_of_last_month:%Y-%m}")
        if stdout:
            stdout.write(
                f"{organization.slug}: invoice {invoice} ({invoice.status}) {invoice.total} {invoice.currency}\n"
            )

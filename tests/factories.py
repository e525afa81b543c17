"""factory_boy factories, and the registry the tenant-isolation test uses to create an object of
another organization for any tenant-scoped model. A new tenant model needs a factory here."""

from __future__ import annotations

from typing import Any

import factory
from django.db import models

from aggregator.tenancy.models import ApiKey, Issuer, Membership, Organization, Role, User


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("email",)

    email = factory.Sequence(lambda n: f"user{n}@example.test")
    full_name = factory.Faker("name")
    password = factory.django.Password("correct horse battery staple")


class IssuerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Issuer

    name = factory.Sequence(lambda n: f"Issuer {n}")
    country = "US"


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization

    slug = factory.Sequence(lambda n: f"org-{n}")
    name = factory.Sequence(lambda n: f"Organization {n}")
    currency = "USD"


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    organization = factory.SubFactory(OrganizationFactory)
    user = factory.SubFactory(UserFactory)
    role = Role.OWNER


class ApiKeyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ApiKey

    organization = factory.SubFactory(OrganizationFactory)
    name = "factory key"
    prefix = factory.Sequence(lambda n: f"p{n:011d}")
    hashed_key = "0" * 64


TENANT_FACTORIES: dict[type[models.Model], Any] = {
    Membership: MembershipFactory,
    ApiKey: ApiKeyFactory,
}


def create_for_organization(model: type[models.Model], organization: Organization) -> models.Model:
    """An instance of ``model`` belonging to ``organization``, via the registered factory."""
    if model is Organization:
        return organization
    try:
        factory_cls = TENANT_FACTORIES[model]
    except KeyError:
        raise LookupError(
            f"No factory for tenant model {model.__name__}: add one to tests/factories.py TENANT_FACTORIES."
        ) from None
    return factory_cls(organization=organization)  # type: ignore[no-any-return]


# --- Vendor accounts and cost data ---------------------------------------------------------------

from datetime import UTC, datetime  # noqa: E402
from decimal import Decimal  # noqa: E402

from providers import credentials as vault  # noqa: E402
from providers.models import BalanceObservation, CostRecord, SyncRun, UsageRecord, VendorAccount  # noqa: E402


class VendorAccountFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = VendorAccount

    organization = factory.SubFactory(OrganizationFactory)
    vendor = "openai"
    label = factory.Sequence(lambda n: f"Account {n}")
    credentials_encrypted = factory.LazyFunction(lambda: vault.encrypt({"admin_key": "sk-admin-FAKE-test-000000"}))
    credentials_masked = factory.LazyFunction(lambda: {"admin_key": "sk-admin-…000"})


class SyncRunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SyncRun

    vendor_account = factory.SubFactory(VendorAccountFactory)
    organization = factory.LazyAttribute(lambda o: o.vendor_account.organization)


class CostRecordFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CostRecord

    vendor_account = factory.SubFactory(VendorAccountFactory)
    organization = factory.LazyAttribute(lambda o: o.vendor_account.organization)
    vendor = factory.LazyAttribute(lambda o: o.vendor_account.vendor)
    source_key = factory.Sequence(lambda n: f"cost:{n}")
    charge_period_start = datetime(2026, 11, 1, tzinfo=UTC)
    charge_period_end = datetime(2026, 11, 2, tzinfo=UTC)
    service_name = "gpt-4o"
    billed_cost = Decimal("1.25")
    billing_currency = "USD"
    updated_at = factory.LazyFunction(lambda: datetime.now(UTC))


def _with_account(factory_cls: Any) -> Any:
    def build(organization: Organization) -> Any:
        return factory_cls(vendor_account=VendorAccountFactory(organization=organization))

    return build


TENANT_FACTORIES.update(
    {
        VendorAccount: VendorAccountFactory,
        SyncRun: _with_account(SyncRunFactory),
        CostRecord: _with_account(CostRecordFactory),
    }
)
_ = (BalanceObservation, UsageRecord)


from billing.alerts.models import Alert  # noqa: E402


class AlertFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Alert

    organization = factory.SubFactory(OrganizationFactory)
    kind = Alert.Kind.LOW_BALANCE
    subject = factory.Sequence(lambda n: f"va:{n}")
    message = "Balance is low."


TENANT_FACTORIES[Alert] = AlertFactory


# --- Payments and top-ups -------------------------------------------------------------------------

from datetime import date  # noqa: E402

from billing.payments.models import PaymentMethod  # noqa: E402
from billing.topups.models import TopUp, TopUpRule  # noqa: E402


class PaymentMethodFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PaymentMethod

    organization = factory.SubFactory(OrganizationFactory)
    gateway = "fake"
    gateway_reference = factory.Sequence(lambda n: f"pm_ok_{n}")
    customer_reference = factory.Sequence(lambda n: f"cus_fake_{n}")
    kind = "card"
    brand = "visa"
    last4 = "4242"
    exp_month = 12
    exp_year = 2030


class TopUpRuleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TopUpRule

    organization = factory.SubFactory(OrganizationFactory)
    target_kind = "vendor_account"
    vendor_account = factory.SubFactory(VendorAccountFactory, organization=factory.SelfAttribute("..organization"))
    currency = "USD"
    trigger = "balance_below"
    threshold_amount = Decimal("100.00")
    method = "fixed"
    amount = Decimal("500.00")
    primary_method = factory.SubFactory(PaymentMethodFactory, organization=factory.SelfAttribute("..organization"))


class TopUpFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TopUp

    organization = factory.SubFactory(OrganizationFactory)
    rule = factory.SubFactory(TopUpRuleFactory, organization=factory.SelfAttribute("..organization"))
    target_kind = factory.LazyAttribute(lambda o: o.rule.target_kind)
    vendor_account = factory.LazyAttribute(lambda o: o.rule.vendor_account)
    amount = Decimal("500.00")
    currency = "USD"
    month = date(2026, 11, 1)
    status = "succeeded"


TENANT_FACTORIES.update({PaymentMethod: PaymentMethodFactory, TopUpRule: TopUpRuleFactory, TopUp: TopUpFactory})


# --- Invoices -------------------------------------------------------------------------------------

from billing.invoicing.models import CreditNote, Invoice  # noqa: E402


class InvoiceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Invoice

    organization = factory.SubFactory(OrganizationFactory)
    issuer = factory.SubFactory(IssuerFactory)
    number = factory.Sequence(lambda n: f"INV-2026-{n:06d}")
    status = Invoice.Status.OPEN
    period_start = date(2026, 10, 1)
    period_end = date(2026, 10, 31)
    currency = "USD"
    billing_mode = "consolidated"
    total = Decimal("10.00")
    amount_due = Decimal("10.00")
    pdf = factory.django.FileField(data=b"%PDF-1.7 factory", filename="invoice.pdf")


class CreditNoteFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CreditNote

    invoice = factory.SubFactory(InvoiceFactory)
    organization = factory.LazyAttribute(lambda o: o.invoice.organization)
    number = factory.Sequence(lambda n: f"CN-2026-{n:06d}")
    amount = Decimal("1.00")
    reason = "Goodwill"
    issue_date = date(2026, 11, 2)


TENANT_FACTORIES.update(
    {
        Invoice: InvoiceFactory,
        CreditNote: lambda organization: CreditNoteFactory(invoice=InvoiceFactory(organization=organization)),
    }
)


from billing.payments.records import Payment  # noqa: E402


class PaymentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Payment

    invoice = factory.SubFactory(InvoiceFactory)
    organization = factory.LazyAttribute(lambda o: o.invoice.organization)
    gateway = "stripe"
    gateway_reference = factory.Sequence(lambda n: f"pi_factory_{n}")
    idempotency_key = factory.Sequence(lambda n: f"invoice:factory:attempt:{n}")
    amount = Decimal("10.00")
    currency = "USD"


TENANT_FACTORIES[Payment] = lambda organization: PaymentFactory(invoice=InvoiceFactory(organization=organization))

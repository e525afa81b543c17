from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from aggregator.system.demo import CUSTOMER_EMAIL, CUSTOMER_PASSWORD, OPERATOR_EMAIL, OPERATOR_PASSWORD
from aggregator.tenancy.models import ApiKey, Membership, Organization, Role, User
from aggregator.tenancy.services import api_key_authenticate
from tests.factories import MembershipFactory, OrganizationFactory


def test_create_organization_with_an_owner(db: Any) -> None:
    out = StringIO()
    call_command(
        "create_organization", slug="initech", name="Initech", currency="jpy", owner="Peter@Initech.test", stdout=out
    )
    organization = Organization.objects.get(slug="initech")
    assert organization.currency == "JPY"
    membership = Membership.objects.get(organization=organization)
    assert (membership.user.email, membership.role) == ("peter@initech.test", Role.OWNER)
    assert "Created organization initech" in out.getvalue()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"slug": "Bad Slug", "name": "X", "currency": "USD"}, "not a valid slug"),
        ({"slug": "ok", "name": "X", "currency": "DOLLARS"}, "three-letter ISO 4217"),
        ({"slug": "ok", "name": "X", "currency": "ZZZ"}, "not an ISO 4217 currency"),
        ({"slug": "ok", "name": "X", "currency": "USD", "owner": "not-an-email"}, "not a valid email"),
    ],
)
def test_create_organization_refuses_bad_input_and_writes_nothing(
    db: Any, options: dict[str, str], message: str
) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("create_organization", **options)
    assert Organization.objects.count() == 0
    assert User.objects.count() == 0


def test_create_organization_refuses_a_taken_slug(organization: Organization) -> None:
    with pytest.raises(CommandError, match="already exists"):
        call_command("create_organization", slug="acme", name="Other", currency="USD")


def test_create_api_key_prints_the_key_once_and_stores_its_hash(organization: Organization) -> None:
    out, err = StringIO(), StringIO()
    call_command("create_api_key", org="acme", name="warehouse export", stdout=out, stderr=err)
    raw = out.getvalue().strip()
    key = ApiKey.objects.get(name="warehouse export")
    assert api_key_authenticate(raw_key=raw) == key
    assert raw not in err.getvalue()
    assert "not shown again" in err.getvalue()
    assert raw.rsplit("_", 1)[1] not in key.hashed_key


def test_create_api_key_for_an_unknown_org_says_so(db: Any) -> None:
    with pytest.raises(CommandError, match="No organization with slug 'nope'"):
        call_command("create_api_key", org="nope", name="x")


def test_load_demo_twice_creates_one_of_everything_and_the_logins_work(db: Any) -> None:
    out = StringIO()
    call_command("load_demo", stdout=out)
    call_command("load_demo", stdout=StringIO())
    assert Organization.objects.filter(slug="demo").count() == 1
    assert User.objects.filter(email__in=[OPERATOR_EMAIL, CUSTOMER_EMAIL]).count() == 2
    assert OPERATOR_PASSWORD in out.getvalue() and CUSTOMER_PASSWORD in out.getvalue()
    client = Client()
    response = client.post("/login/", {"username": CUSTOMER_EMAIL.upper(), "password": CUSTOMER_PASSWORD})
    assert response.status_code == 302
    assert "Demo Customer Inc." in client.get("/").content.decode()
    admin = Client()
    admin.post("/admin/login/", {"username": OPERATOR_EMAIL, "password": OPERATOR_PASSWORD})
    assert admin.get("/admin/tenancy/organization/").status_code == 200
    # The staff roles: support may look at organizations but not at the dashboard of receivables.
    assert {
        u.email: [g.name for g in u.groups.all()] for u in User.objects.filter(is_staff=True, is_superuser=False)
    } == {
        "finance@example.com": ["finance"],
        "support@example.com": ["support"],
    }
    support = Client()
    support.post("/admin/login/", {"username": "support@example.com", "password": OPERATOR_PASSWORD})
    assert support.get("/admin/tenancy/organization/").status_code == 200
    finance = Client()
    finance.post("/admin/login/", {"username": "finance@example.com", "password": OPERATOR_PASSWORD})
    assert finance.get("/admin/dashboard/").status_code == 200


def test_portal_requires_sign_in(db: Any) -> None:
    response = Client().get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_wrong_password_shows_an_error(owner: User) -> None:
    response = Client().post("/login/", {"username": "owner@acme.test", "password": "wrong"})
    assert response.status_code == 200
    assert "correct email" in response.content.decode() or "Please enter a correct" in response.content.decode()


def test_a_member_of_two_organizations_switches_between_them(owner: User, organization: Organization) -> None:
    second = OrganizationFactory(slug="second", name="Second Co")
    MembershipFactory(organization=second, user=owner, role=Role.VIEWER)
    client = Client()
    client.force_login(owner)
    assert client.get("/api/v1/organizations/current/").json()["slug"] == "acme"
    response = client.post("/organization/switch/", {"organization": "second", "next": "/"})
    assert response.status_code == 302
    assert client.get("/api/v1/organizations/current/").json()["slug"] == "second"
    assert "Second Co" in client.get("/").content.decode()
    # The role follows the selected organization: viewer there.
    assert (
        client.patch("/api/v1/organizations/current/", {"name": "X"}, content_type="application/json").status_code
        == 403
    )


def test_switching_to_an_organization_you_are_not_in_changes_nothing(
    owner: User, other_organization: Organization
) -> None:
    client = Client()
    client.force_login(owner)
    client.post("/organization/switch/", {"organization": other_organization.slug})
    assert client.get("/api/v1/organizations/current/").json()["slug"] == "acme"


def test_switch_does_not_redirect_off_site(owner: User) -> None:
    client = Client()
    client.force_login(owner)
    response = client.post("/organization/switch/", {"organization": "acme", "next": "https://evil.example/"})
    assert response["Location"] == "/"


def test_the_portal_speaks_japanese(owner: User) -> None:
    client = Client()
    client.force_login(owner)
    client.post("/i18n/setlang/", {"language": "ja", "next": "/"})
    response = client.get("/")
    assert '<html lang="ja">' in response.content.decode()


def test_migrate_creates_the_default_schedule_once_and_keeps_operator_changes(db: Any) -> None:
    from django_celery_beat.models import PeriodicTask

    from aggregator.system.schedule import DEFAULT_CRONTABS, DEFAULT_SCHEDULE, ensure_default_schedule

    ensure_default_schedule()
    PeriodicTask.objects.filter(name="Evaluate alerts").update(enabled=False)
    ensure_default_schedule()
    names = set(PeriodicTask.objects.values_list("name", flat=True))
    assert set(DEFAULT_SCHEDULE) | set(DEFAULT_CRONTABS) <= names
    assert PeriodicTask.objects.get(name="Evaluate alerts").enabled is False
    close = PeriodicTask.objects.get(name="Close last month's invoices")
    assert (close.crontab.day_of_month, close.crontab.hour) == ("1", "3")


def test_dashboard_figures_equal_the_ledger_and_the_api(owner: User, organization: Organization) -> None:
    from datetime import timedelta
    from decimal import Decimal

    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from billing.ledger.services import credit_purchase_record
    from billing.ledger.settlement import settle_vendor_account
    from tests.billing.conftest import cost
    from tests.factories import VendorAccountFactory

    client = Client()
    client.force_login(owner)
    today = timezone.now().date()
    account = VendorAccountFactory(organization=organization, label="OpenAI prod")
    credit_purchase_record(
        vendor_account=account,
        amount=Decimal("500"),
        currency="USD",
        kind="purchase",
        effective_at=timezone.now() - timedelta(days=40),
    )
    for i in range(1, 4):
        cost(account, today - timedelta(days=i), "12.50", key=f"k{i}")
    settle_vendor_account(vendor_account_id=account.pk)
    with CaptureQueriesContext(connection) as few:
        page = client.get("/").content.decode()
    api = client.get(f"/api/v1/vendor-accounts/{account.pk}/balance/").json()
    assert "462.50 USD" in page and api["balance"] == "462.5000000000"
    assert f"{api['runway_days']} days ({api['depletion_date']})" in page
    for i in range(4, 30):  # more data, same number of queries
        cost(account, today - timedelta(days=i), "1.00", key=f"m{i}")
    settle_vendor_account(vendor_account_id=account.pk)
    with CaptureQueriesContext(connection) as many:
        client.get("/")
    assert len(many) == len(few)

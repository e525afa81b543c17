from typing import Any

from rest_framework.test import APIClient

from aggregator.tenancy.models import AuditEvent, Membership, Organization, Role, User
from tests.factories import MembershipFactory


def test_current_organization_returns_the_selected_one(owner_client: APIClient) -> None:
    body = owner_client.get("/api/v1/organizations/current/").json()
    assert body["slug"] == "acme"
    assert body["currency"] == "USD"
    assert body["billing_mode"] == "consolidated"


def test_billing_admin_updates_profile_and_an_audit_row_is_written(organization: Organization) -> None:
    admin = MembershipFactory(organization=organization, role=Role.BILLING_ADMIN).user
    client = APIClient()
    client.force_login(admin)
    response = client.patch(
        "/api/v1/organizations/current/", {"legal_name": "Acme Corporation", "country": "DE"}, format="json"
    )
    assert response.status_code == 200
    organization.refresh_from_db()
    assert (organization.legal_name, organization.country) == ("Acme Corporation", "DE")
    event = AuditEvent.objects.get(action="organization.update")
    assert event.actor == admin
    assert event.before == {"legal_name": "", "country": ""}
    assert event.after == {"legal_name": "Acme Corporation", "country": "DE"}


def test_currency_and_slug_are_read_only_through_the_api(owner_client: APIClient, organization: Organization) -> None:
    owner_client.patch("/api/v1/organizations/current/", {"currency": "JPY", "slug": "hijack"}, format="json")
    organization.refresh_from_db()
    assert (organization.currency, organization.slug) == ("USD", "acme")


def test_validation_errors_share_one_shape_with_a_readable_message(owner_client: APIClient) -> None:
    response = owner_client.patch("/api/v1/organizations/current/", {"country": "Germany"}, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["message"].startswith("country: ")
    assert "two-letter" in error["message"]
    assert "country" in error["fields"]


def test_unknown_api_path_answers_json_404(owner_client: APIClient) -> None:
    response = owner_client.get("/api/v1/no-such-thing/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_members_list_is_paginated_and_scoped(
    owner_client: APIClient, organization: Organization, other_organization: Organization
) -> None:
    for _ in range(3):
        MembershipFactory(organization=organization, role=Role.VIEWER)
    MembershipFactory(organization=other_organization)
    body = owner_client.get("/api/v1/members/?page_size=2").json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert body["count"] == 4
    assert len(body["results"]) == 2
    assert body["previous"] is None and "page=2" in body["next"]
    emails = {m["email"] for m in owner_client.get("/api/v1/members/?page=2&page_size=2").json()["results"]}
    emails |= {m["email"] for m in body["results"]}
    assert emails == set(Membership.objects.filter(organization=organization).values_list("user__email", flat=True))


def test_only_owners_change_roles(organization: Organization, owner_client: APIClient) -> None:
    admin = MembershipFactory(organization=organization, role=Role.BILLING_ADMIN)
    viewer = MembershipFactory(organization=organization, role=Role.VIEWER)
    as_admin = APIClient()
    as_admin.force_login(admin.user)
    response = as_admin.patch(f"/api/v1/members/{viewer.pk}/", {"role": "owner"}, format="json")
    assert response.status_code == 403
    assert (
        owner_client.patch(f"/api/v1/members/{viewer.pk}/", {"role": "billing_admin"}, format="json").status_code == 200
    )
    viewer.refresh_from_db()
    assert viewer.role == Role.BILLING_ADMIN
    assert AuditEvent.objects.filter(action="membership.update_role", before={"role": "viewer"}).count() == 1


def test_the_last_owner_cannot_be_demoted_or_removed(
    owner_client: APIClient, owner: User, organization: Organization
) -> None:
    me = Membership.objects.get(user=owner)
    response = owner_client.patch(f"/api/v1/members/{me.pk}/", {"role": "viewer"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "last_owner",
        "message": "An organization needs at least one owner: make another member owner first.",
    }
    assert owner_client.delete(f"/api/v1/members/{me.pk}/").status_code == 400
    me.refresh_from_db()
    assert me.role == Role.OWNER


def test_a_viewer_cannot_change_anything(viewer: User, organization: Organization) -> None:
    client = APIClient()
    client.force_login(viewer)
    target = MembershipFactory(organization=organization, role=Role.VIEWER)
    assert client.patch("/api/v1/organizations/current/", {"name": "X"}, format="json").status_code == 403
    assert client.patch(f"/api/v1/members/{target.pk}/", {"role": "owner"}, format="json").status_code == 403
    assert client.delete(f"/api/v1/members/{target.pk}/").status_code == 403
    assert Membership.objects.filter(pk=target.pk, role=Role.VIEWER).exists()


def test_user_without_membership_is_told_what_to_do(make_user: Any, db: Any) -> None:
    client = APIClient()
    client.force_login(make_user())
    response = client.get("/api/v1/organizations/current/")
    assert response.status_code == 403
    assert "ask an owner" in response.json()["error"]["message"]


def test_openapi_schema_and_docs_are_served(owner_client: APIClient) -> None:
    schema = owner_client.get("/api/schema/?format=json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/v1/organizations/current/" in paths
    assert "/api/v1/members/{id}/" in paths
    docs = owner_client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger-ui" in docs.content


def test_the_openapi_schema_generates_without_warnings(tmp_path: Any) -> None:
    from django.core.management import call_command

    call_command("spectacular", "--fail-on-warn", "--validate", "--file", str(tmp_path / "schema.yml"))
    assert "/api/v1/vendor-accounts/{id}/balance/" in (tmp_path / "schema.yml").read_text()

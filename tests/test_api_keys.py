import hashlib
from typing import Any

from django.db import connection
from rest_framework.test import APIClient

from aggregator.tenancy.models import ApiKey, AuditEvent, Organization, Role
from aggregator.tenancy.services import api_key_create, api_key_revoke
from tests.factories import MembershipFactory


def _client(raw_key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return client


def test_a_valid_key_acts_for_its_organization(organization: Organization) -> None:
    _key, raw = api_key_create(organization=organization, name="ci")
    response = _client(raw).get("/api/v1/organizations/current/")
    assert response.status_code == 200
    assert response.json()["slug"] == "acme"


def test_keys_are_stored_only_as_a_sha256_hash(organization: Organization) -> None:
    key, raw = api_key_create(organization=organization, name="ci")
    assert raw.startswith(f"agk_{key.prefix}_")
    assert key.hashed_key == hashlib.sha256(raw.encode()).hexdigest()
    secret_part = raw.rsplit("_", 1)[1]
    with connection.cursor() as cursor:
        cursor.execute("SELECT name, prefix, hashed_key, role FROM tenancy_apikey")
        stored = " ".join(str(v) for row in cursor.fetchall() for v in row)
    assert secret_part not in stored
    assert raw not in " ".join(str(e.after) for e in AuditEvent.objects.all())


def test_a_wrong_key_is_refused_with_401_and_the_error_shape(organization: Organization) -> None:
    _key, raw = api_key_create(organization=organization, name="ci")
    tampered = raw[:-4] + ("0000" if not raw.endswith("0000") else "1111")
    response = _client(tampered).get("/api/v1/organizations/current/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"
    assert "not valid or was revoked" in response.json()["error"]["message"]
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert _client("agk_nosuch_key").get("/api/v1/organizations/current/").status_code == 401
    assert _client("not-even-our-format").get("/api/v1/organizations/current/").status_code == 401


def test_a_revoked_key_is_refused(organization: Organization) -> None:
    key, raw = api_key_create(organization=organization, name="ci")
    api_key_revoke(key=key)
    assert _client(raw).get("/api/v1/organizations/current/").status_code == 401
    assert AuditEvent.objects.filter(action="api_key.revoke", object_id=str(key.pk)).count() == 1


def test_another_organizations_key_sees_404_for_our_objects(
    organization: Organization, other_organization: Organization
) -> None:
    member = MembershipFactory(organization=organization, role=Role.VIEWER)
    _key, their_raw = api_key_create(organization=other_organization, name="theirs")
    response = _client(their_raw).get(f"/api/v1/members/{member.pk}/")
    assert response.status_code == 404
    assert response.json() == {
        "error": {"code": "not_found", "message": "Not found: no such object in your organization."}
    }
    assert _client(their_raw).get("/api/v1/organizations/current/").json()["slug"] == "globex"


def test_no_credentials_get_401(api_client: APIClient, db: Any) -> None:
    response = api_client.get("/api/v1/organizations/current/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_a_viewer_key_cannot_write(organization: Organization) -> None:
    _key, raw = api_key_create(organization=organization, name="ro", role=Role.VIEWER)
    response = _client(raw).patch("/api/v1/organizations/current/", {"name": "Renamed"}, format="json")
    assert response.status_code == 403
    assert "Viewer" in response.json()["error"]["message"]
    organization.refresh_from_db()
    assert organization.name == "Acme Corp"


def test_last_used_is_recorded(organization: Organization) -> None:
    key, raw = api_key_create(organization=organization, name="ci")
    assert key.last_used_at is None
    _client(raw).get("/api/v1/organizations/current/")
    assert ApiKey.objects.get(pk=key.pk).last_used_at is not None

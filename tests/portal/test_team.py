"""Portal team and billing profile: invitations by email and their acceptance, roles, removal,
the billing profile with tax id checks; every change audited; roles and tenant scoping."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from aggregator.tenancy.models import AuditEvent, Invitation, Membership, Organization, Role, User
from tests.factories import InvoiceFactory, MembershipFactory, UserFactory
from tests.portal.conftest import signed_in, text


def _invite(client: Client, capture: Any, email: str = "new@acme.test", role: str = Role.BILLING_ADMIN) -> str:
    """Send an invitation through the page; returns the link's path from the email."""
    with capture(execute=True):
        response = client.post("/team/invite/", {"email": email, "role": role}, follow=True)
    assert f"Invitation sent to {email.lower()}." in text(response)
    match = re.search(
        r"http://testserver(/invitations/[^/\s]+/)|https?://[^/\s]+(/invitations/[^/\s]+/)", mail.outbox[-1].body
    )
    assert match
    return match.group(1) or match.group(2)


def test_the_team_page_lists_members_and_roles(as_viewer: Client, owner: User, viewer: User) -> None:
    page = text(as_viewer.get("/team/"))
    assert "owner@acme.test" in page and "viewer@acme.test" in page
    assert 'id="invite-form"' not in page and "role-submit" not in page


def test_an_invitation_is_emailed_and_the_link_creates_the_account_and_membership(
    as_owner: Client, organization: Organization, owner: User, django_capture_on_commit_callbacks: Any, settings: Any
) -> None:
    settings.SITE_URL = "https://billing.example.test"
    path = _invite(as_owner, django_capture_on_commit_callbacks, "New.Person@Acme.test")
    message = mail.outbox[0]
    assert message.to == ["new.person@acme.test"]
    assert message.subject == "You are invited to Acme Corp on AI Invoice Aggregator"
    assert "owner@acme.test invites you to join Acme Corp as Billing admin." in message.body
    assert f"https://billing.example.test{path}" in message.body
    invitation = Invitation.objects.get()
    assert path.split("/")[2] not in invitation.token_hash  # only a hash of the token is stored

    stranger = Client()
    assert "Choose a password for your new account." in text(stranger.get(path))
    response = stranger.post(
        path,
        {"full_name": "New Person", "password1": "a-long passphrase 42", "password2": "a-long passphrase 42"},
        follow=True,
    )
    assert "Welcome to Acme Corp." in text(response)
    user = User.objects.get(email="new.person@acme.test")
    assert user.check_password("a-long passphrase 42") and user.full_name == "New Person"
    assert Membership.objects.get(user=user).role == Role.BILLING_ADMIN
    assert stranger.get("/").status_code == 200  # signed in
    assert stranger.get(path).status_code == 404  # the link works once
    assert set(AuditEvent.objects.values_list("action", flat=True)) >= {"invitation.create", "invitation.accept"}


def test_a_signed_in_user_joins_with_their_account(
    as_owner: Client, other_organization: Organization, django_capture_on_commit_callbacks: Any
) -> None:
    existing = MembershipFactory(organization=other_organization, user__email="sam@globex.test").user
    path = _invite(as_owner, django_capture_on_commit_callbacks, "sam@globex.test", Role.VIEWER)
    client = signed_in(existing)
    assert 'id="invitation-accept"' in text(client.get(path))
    client.post(path)
    assert Membership.objects.get(user=existing, organization__slug="acme").role == Role.VIEWER


def test_the_link_refuses_another_signed_in_user(
    as_owner: Client, owner: User, django_capture_on_commit_callbacks: Any
) -> None:
    path = _invite(as_owner, django_capture_on_commit_callbacks, "someone@else.test")
    page = text(as_owner.post(path))
    assert "This invitation is for someone@else.test, but you are signed in as owner@acme.test" in page
    assert not Membership.objects.filter(user__email="someone@else.test").exists()


def test_an_existing_account_must_sign_in_first(as_owner: Client, django_capture_on_commit_callbacks: Any) -> None:
    UserFactory(email="has@password.test")
    path = _invite(as_owner, django_capture_on_commit_callbacks, "has@password.test")
    page = text(Client().get(path))
    assert "You already have an account: sign in, then open this link again." in page
    response = Client().post(path, {"password1": "x-takeover-pass-99", "password2": "x-takeover-pass-99"})
    assert response.status_code == 400
    assert not User.objects.get(email="has@password.test").check_password("x-takeover-pass-99")


def test_revoked_and_expired_links_are_refused(as_owner: Client, django_capture_on_commit_callbacks: Any) -> None:
    revoked = _invite(as_owner, django_capture_on_commit_callbacks, "a@acme.test")
    expired = _invite(as_owner, django_capture_on_commit_callbacks, "b@acme.test")
    as_owner.post("/team/invitations/revoke/", {"invitation": Invitation.objects.get(email="a@acme.test").pk})
    Invitation.objects.filter(email="b@acme.test").update(expires_at=timezone.now() - timedelta(minutes=1))
    for path in (revoked, expired):
        response = Client().get(path)
        assert response.status_code == 404
        assert "This invitation link is no longer valid" in text(response)


def test_inviting_a_member_or_a_bad_address_says_why(as_owner: Client, viewer: User) -> None:
    response = as_owner.post("/team/invite/", {"email": "viewer@acme.test", "role": "viewer"})
    assert response.status_code == 400
    assert "viewer@acme.test is already a member of Acme Corp: change their role instead." in text(response)
    response = as_owner.post("/team/invite/", {"email": "not-an-email", "role": "viewer"})
    assert "Enter a valid email address." in text(response)
    assert not Invitation.objects.exists()


def test_an_owner_changes_a_role_and_it_is_audited(as_owner: Client, owner: User, viewer: User) -> None:
    membership = Membership.objects.get(user=viewer)
    as_owner.post(f"/team/members/{membership.pk}/role/", {"role": "billing_admin"})
    membership.refresh_from_db()
    assert membership.role == Role.BILLING_ADMIN
    event = AuditEvent.objects.get(action="membership.update_role")
    assert (event.actor, event.before, event.after) == (owner, {"role": "viewer"}, {"role": "billing_admin"})


def test_the_last_owner_stays(as_owner: Client, owner: User) -> None:
    membership = Membership.objects.get(user=owner)
    page = text(as_owner.post(f"/team/members/{membership.pk}/role/", {"role": "viewer"}, follow=True))
    assert "An organization needs at least one owner: make another member owner first." in page
    page = text(as_owner.post(f"/team/members/{membership.pk}/remove/", follow=True))
    assert "An organization needs at least one owner" in page
    membership.refresh_from_db()
    assert membership.role == Role.OWNER


def test_an_owner_removes_a_member(as_owner: Client, viewer: User) -> None:
    membership = Membership.objects.get(user=viewer)
    assert "viewer@acme.test was removed." in text(as_owner.post(f"/team/members/{membership.pk}/remove/", follow=True))
    assert not Membership.objects.filter(pk=membership.pk).exists()


def test_another_organizations_members_are_not_found(as_owner: Client, other_organization: Organization) -> None:
    theirs = MembershipFactory(organization=other_organization, role=Role.VIEWER)
    assert as_owner.post(f"/team/members/{theirs.pk}/role/", {"role": "owner"}).status_code == 404
    assert as_owner.post(f"/team/members/{theirs.pk}/remove/").status_code == 404
    invitation = Invitation.objects.create(
        organization=other_organization,
        email="x@globex.test",
        token_hash="0" * 64,
        expires_at=timezone.now() + timedelta(days=1),
    )
    assert as_owner.post("/team/invitations/revoke/", {"invitation": invitation.pk}).status_code == 404
    theirs.refresh_from_db()
    invitation.refresh_from_db()
    assert theirs.role == Role.VIEWER and invitation.revoked_at is None


@pytest.mark.parametrize("role", [Role.VIEWER, Role.BILLING_ADMIN])
@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/team/invite/", {"email": "new@acme.test", "role": "owner"}),
        ("/team/invitations/revoke/", {"invitation": "{invitation}"}),
        ("/team/members/{member}/role/", {"role": "owner"}),
        ("/team/members/{member}/remove/", {}),
    ],
)
def test_only_owners_change_the_team(
    organization: Organization, owner: User, role: str, path: str, data: dict[str, str]
) -> None:
    member = MembershipFactory(organization=organization, role=role)
    invitation = Invitation.objects.create(
        organization=organization,
        email="p@acme.test",
        token_hash="1" * 64,
        expires_at=timezone.now() + timedelta(days=1),
    )
    ids = {"member": member.pk, "invitation": invitation.pk}
    before = (list(Membership.objects.values()), list(Invitation.objects.values()))
    response = signed_in(member.user).post(path.format(**ids), {k: v.format(**ids) for k, v in data.items()})
    assert response.status_code == 403
    assert "it needs Owner or higher" in text(response)
    assert (list(Membership.objects.values()), list(Invitation.objects.values())) == before


# --- Billing profile --------------------------------------------------------------------------


PROFILE = {
    "legal_name": "Acme Corporation GmbH",
    "address": "Hauptstraße 1\n10115 Berlin",
    "country": "de",
    "tax_id": "DE 136 695 976",
    "billing_email": "ap@acme.test",
    "locale": "en",
}


def test_the_billing_profile_is_saved_normalized_and_audited(
    as_admin: Client, organization: Organization, billing_admin: User
) -> None:
    response = as_admin.post("/billing-profile/", PROFILE, follow=True)
    assert "The billing profile was saved." in text(response)
    organization.refresh_from_db()
    assert (organization.country, organization.tax_id, organization.legal_name) == (
        "DE",
        "DE136695976",
        "Acme Corporation GmbH",
    )
    event = AuditEvent.objects.get(action="organization.update")
    assert event.actor == billing_admin
    assert event.before["tax_id"] == "" and event.after["tax_id"] == "DE136695976"
    assert "currency" not in event.after


@pytest.mark.parametrize(
    ("country", "tax_id", "message"),
    [
        ("DE", "DE136695977", "DE136695977 is not a valid DE VAT id: check the digits"),
        ("DE", "136695976", "An EU VAT id starts with its country prefix: DE followed by the number."),
        ("GR", "GR094259216", "An EU VAT id starts with its country prefix: EL followed by the number."),
        ("JP", "1234567890123", "A Japanese invoice registration number is T followed by 13 digits"),
        ("JP", "T123456789012", "A Japanese invoice registration number is T followed by 13 digits"),
        ("", "DE136695976", "Give the country of the tax id."),
        ("Germany", "", "Ensure this value has at most 2 characters"),
        ("GB", "GB123", "GB123 is not a valid tax id for GB: check its format."),
    ],
)
def test_a_malformed_tax_id_is_refused_with_the_expected_format(
    as_admin: Client, organization: Organization, country: str, tax_id: str, message: str
) -> None:
    response = as_admin.post("/billing-profile/", {**PROFILE, "country": country, "tax_id": tax_id})
    assert response.status_code == 400
    assert message in text(response)
    organization.refresh_from_db()
    assert organization.tax_id == ""


def test_a_japanese_registration_number_is_accepted(as_admin: Client, organization: Organization) -> None:
    as_admin.post("/billing-profile/", {**PROFILE, "country": "JP", "tax_id": "T1234567890123", "locale": "ja"})
    organization.refresh_from_db()
    assert (organization.tax_id, organization.locale) == ("T1234567890123", "ja")


def test_the_invoice_currency_changes_until_the_first_invoice(as_owner: Client, organization: Organization) -> None:
    assert 'name="currency"' in text(as_owner.get("/billing-profile/"))
    response = as_owner.post("/billing-profile/", {**PROFILE, "currency": "eu"})
    assert response.status_code == 400
    assert "Use a three-letter ISO 4217 currency code, e.g. USD, EUR or JPY." in text(response)
    as_owner.post("/billing-profile/", {**PROFILE, "currency": "eur"})
    organization.refresh_from_db()
    assert organization.currency == "EUR"
    event = AuditEvent.objects.get(action="organization.update")
    assert (event.before["currency"], event.after["currency"]) == ("USD", "EUR")

    InvoiceFactory(organization=organization, currency="EUR")
    page = text(as_owner.get("/billing-profile/"))
    assert 'name="currency"' not in page and "fixed since the first invoice" in page
    response = as_owner.post("/billing-profile/", {**PROFILE, "currency": "JPY"})
    assert response.status_code == 400
    assert "The invoice currency cannot change after the first invoice or ledger entry: ask us." in text(response)
    organization.refresh_from_db()
    assert organization.currency == "EUR"


def test_a_viewer_sees_the_profile_but_cannot_change_it(as_viewer: Client, organization: Organization) -> None:
    assert 'id="profile-form"' not in text(as_viewer.get("/billing-profile/"))
    response = as_viewer.post("/billing-profile/", PROFILE)
    assert response.status_code == 403
    organization.refresh_from_db()
    assert organization.tax_id == "" and not AuditEvent.objects.filter(action="organization.update").exists()

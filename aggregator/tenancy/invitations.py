"""Invitations: an owner invites a person by email; the emailed link makes them a member.

The link carries a random token; only its SHA-256 is stored, so the database alone cannot be used
to join. An invitation works once, for the invited address only, until it expires or is revoked.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone, translation

from aggregator.tenancy.models import Invitation, Membership, Organization, Role, User
from aggregator.tenancy.services import TenancyError, audit_record, user_get_or_create

INVITATION_VALID_DAYS = 7


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def invitation_url(*, token: str) -> str:
    return f"{settings.SITE_URL}{reverse('portal:invitation-accept', kwargs={'token': token})}"


@transaction.atomic
def invitation_create(*, organization: Organization, email: str, role: str, invited_by: User | None) -> Invitation:
    """Invite ``email`` with ``role`` and email them the link (sent once the transaction commits)."""
    if role not in Role.values:
        raise TenancyError(f"{role!r} is not a role: use one of {', '.join(Role.values)}.")
    normalized = User.objects.normalize_email(email.strip()).lower()
    try:
        User._meta.get_field("email").run_validators(normalized)
    except ValidationError:
        raise TenancyError(f"{email!r} is not a valid email address.") from None
    if Membership.objects.filter(organization=organization, user__email=normalized).exists():
        raise TenancyError(f"{normalized} is already a member of {organization.name}: change their role instead.")
    now = timezone.now()
    # A pending, expired invitation would block a new one: close it first.
    Invitation.objects.filter(
        organization=organization, email=normalized, accepted_at__isnull=True, revoked_at__isnull=True,
        expires_at__lte=now,
    ).update(revoked_at=now)  # fmt: skip
    token = secrets.token_urlsafe(32)
    try:
        with transaction.atomic():
            invitation = Invitation.objects.create(
                organization=organization,
                email=normalized,
                role=role,
                token_hash=_hash(token),
                invited_by=invited_by,
                created_at=now,
                expires_at=now + timedelta(days=INVITATION_VALID_DAYS),
            )
    except IntegrityError:
        raise TenancyError(
            f"{normalized} already has a pending invitation: revoke it first to send a new one."
        ) from None
    audit_record(
        action="invitation.create",
        organization=organization,
        actor=invited_by,
        obj=invitation,
        after={"email": normalized, "role": role, "expires_at": invitation.expires_at.isoformat()},
    )
    transaction.on_commit(lambda: _send(invitation, token))
    return invitation


def _send(invitation: Invitation, token: str) -> None:
    organization = invitation.organization
    context = {
        "organization": organization,
        "invitation": invitation,
        "inviter": invitation.invited_by,
        "url": invitation_url(token=token),
        "role": Role(invitation.role).label,
        "days": INVITATION_VALID_DAYS,
    }
    with translation.override(organization.locale):
        subject = render_to_string("portal/team/invitation_subject.txt", context).strip()
        body = render_to_string("portal/team/invitation_email.txt", context)
    send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [invitation.email])


def invitation_for_token(*, token: str) -> Invitation | None:
    """The pending invitation this token opens, or None (unknown, used, revoked or expired)."""
    invitation = Invitation.objects.select_related("organization").filter(token_hash=_hash(token)).first()
    if invitation is None or not invitation.is_pending():
        return None
    return invitation


@transaction.atomic
def invitation_revoke(*, invitation: Invitation, actor: User | None) -> Invitation:
    locked = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if locked.accepted_at is None and locked.revoked_at is None:
        locked.revoked_at = timezone.now()
        locked.save(update_fields=["revoked_at"])
        audit_record(
            action="invitation.revoke",
            organization=locked.organization,
            actor=actor,
            obj=locked,
            before={"email": locked.email, "role": locked.role},
        )
    return locked


@transaction.atomic
def invitation_accept(*, token: str, user: User | None = None, password: str | None = None) -> Membership:
    """Join the organization. ``user`` is the signed-in user (their email must be the invited one);
    without one, the invited address's account is created with ``password`` (or found, when it
    has no usable password yet, e.g. created by an operator)."""
    invitation = invitation_for_token(token=token)
    if invitation is None:
        raise TenancyError("This invitation link is no longer valid: ask an owner of the organization for a new one.")
    invitation = Invitation.objects.select_for_update().select_related("organization").get(pk=invitation.pk)
    if not invitation.is_pending():
        raise TenancyError("This invitation link is no longer valid: ask an owner of the organization for a new one.")
    if user is not None:
        if user.email.lower() != invitation.email:
            raise TenancyError(
                f"This invitation is for {invitation.email}, but you are signed in as {user.email}: "
                "sign out, then open the link again."
            )
    else:
        existing = User.objects.filter(email=invitation.email).first()
        if existing is not None and existing.has_usable_password():
            raise TenancyError(f"An account for {invitation.email} exists: sign in first, then open the link again.")
        if not password:
            raise TenancyError("Choose a password for your new account.")
        user = existing or user_get_or_create(email=invitation.email)
        user.set_password(password)
        user.save(update_fields=["password"])
    membership, created = Membership.objects.get_or_create(
        organization=invitation.organization, user=user, defaults={"role": invitation.role}
    )
    invitation.accepted_at = timezone.now()
    invitation.accepted_by = user
    invitation.save(update_fields=["accepted_at", "accepted_by"])
    audit_record(
        action="invitation.accept",
        organization=invitation.organization,
        actor=user,
        obj=membership,
        after={"email": user.email, "role": membership.role, "new_member": created},
    )
    return membership

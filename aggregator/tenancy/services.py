"""Writes for organizations, members and API keys. Each money or access change leaves an audit row."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from aggregator.money import CurrencyError, currency_code
from aggregator.tenancy.models import ApiKey, AuditEvent, Membership, Organization, Role, User

API_KEY_PREFIX = "agk"


class TenancyError(Exception):
    """A request that cannot be carried out; the message says what to do instead."""


def audit_record(
    *,
    action: str,
    organization: Organization | None = None,
    actor: User | None = None,
    actor_api_key: ApiKey | None = None,
    obj: Any = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEvent:
    return AuditEvent.objects.create(
        action=action,
        organization=organization,
        actor=actor if actor is not None and actor.is_authenticated else None,
        actor_api_key=actor_api_key,
        object_type=obj._meta.label if obj is not None else "",
        object_id=str(obj.pk) if obj is not None else "",
        before=before,
        after=after,
    )


@transaction.atomic
def organization_create(
    *, slug: str, name: str, currency: str, owner_email: str | None = None, actor: User | None = None
) -> Organization:
    """Create a customer organization; with ``owner_email``, make that user (created if new) its owner."""
    if slugify(slug) != slug or not slug:
        raise TenancyError(f"{slug!r} is not a valid slug: use lower-case letters, digits and hyphens, e.g. acme-corp.")
    try:
        code = currency_code(currency)
    except CurrencyError as exc:
        raise TenancyError(str(exc)) from None
    if Organization.objects.filter(slug=slug).exists():
        raise TenancyError(f"An organization with slug {slug!r} already exists: choose another slug.")
    organization = Organization(slug=slug, name=name, currency=code)
    try:
        organization.full_clean()
    except ValidationError as exc:
        raise TenancyError("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())) from None
    organization.save()
    if owner_email:
        user = user_get_or_create(email=owner_email)
        Membership.objects.create(organization=organization, user=user, role=Role.OWNER)
    audit_record(
        action="organization.create",
        organization=organization,
        actor=actor,
        obj=organization,
        after={"slug": slug, "name": name, "currency": code, "owner": owner_email},
    )
    return organization


def user_get_or_create(*, email: str) -> User:
    """The user with this email, or a new one with no usable password (they set it by reset)."""
    normalized = User.objects.normalize_email(email.strip()).lower()
    try:
        User._meta.get_field("email").run_validators(normalized)
    except ValidationError:
        raise TenancyError(f"{email!r} is not a valid email address.") from None
    user = User.objects.filter(email=normalized).first()
    if user is None:
        user = User.objects.create_user(email=normalized, password=None)
    return user


def _hash_key(raw_key: str) -> str:
    # Keys carry 192 bits of randomness, so a fast hash is safe and keeps every request cheap.
    return hashlib.sha256(raw_key.encode()).hexdigest()


@transaction.atomic
def api_key_create(
    *, organization: Organization, name: str, role: str = Role.BILLING_ADMIN, created_by: User | None = None
) -> tuple[ApiKey, str]:
    """Create an API key. Returns the row and the key itself, which is never stored or shown again."""
    if role not in Role.values:
        raise TenancyError(f"{role!r} is not a role: use one of {', '.join(Role.values)}.")
    if not name.strip():
        raise TenancyError("Give the key a name that says what uses it, e.g. 'finance export'.")
    for _attempt in range(5):
        prefix = secrets.token_hex(6)
        raw_key = f"{API_KEY_PREFIX}_{prefix}_{secrets.token_hex(24)}"
        try:
            with transaction.atomic():
                key = ApiKey.objects.create(
                    organization=organization,
                    name=name.strip(),
                    prefix=prefix,
                    hashed_key=_hash_key(raw_key),
                    role=role,
                    created_by=created_by,
                )
            break
        except IntegrityError:  # prefix collision: draw again
            continue
    else:  # pragma: no cover - 48 random bits colliding five times
        raise TenancyError("Could not allocate a unique API key prefix; try again.")
    audit_record(
        action="api_key.create",
        organization=organization,
        actor=created_by,
        obj=key,
        after={"name": key.name, "role": role, "prefix": prefix},
    )
    return key, raw_key


def api_key_authenticate(*, raw_key: str) -> ApiKey | None:
    """The active key matching ``raw_key``, or None."""
    parts = raw_key.split("_")
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX:
        return None
    key = ApiKey.objects.select_related("organization").filter(prefix=parts[1], revoked_at__isnull=True).first()
    if key is None or not secrets.compare_digest(key.hashed_key, _hash_key(raw_key)):
        return None
    now = timezone.now()
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() > 60:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
    return key


@transaction.atomic
def api_key_revoke(*, key: ApiKey, actor: User | None = None, actor_api_key: ApiKey | None = None) -> ApiKey:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        audit_record(
            action="api_key.revoke",
            organization=key.organization,
            actor=actor,
            actor_api_key=actor_api_key,
            obj=key,
            after={"revoked_at": key.revoked_at.isoformat()},
        )
    return key


@transaction.atomic
def membership_update_role(
    *, membership: Membership, role: str, actor: User | None = None, actor_api_key: ApiKey | None = None
) -> Membership:
    if role not in Role.values:
        raise TenancyError(f"{role!r} is not a role: use one of {', '.join(Role.values)}.")
    locked = Membership.objects.select_for_update().get(pk=membership.pk)
    if locked.role == Role.OWNER and role != Role.OWNER:
        _refuse_last_owner(locked)
    before = {"role": locked.role}
    locked.role = role
    locked.save(update_fields=["role"])
    audit_record(
        action="membership.update_role",
        organization=locked.organization,
        actor=actor,
        actor_api_key=actor_api_key,
        obj=locked,
        before=before,
        after={"role": role},
    )
    return locked


@transaction.atomic
def membership_remove(
    *, membership: Membership, actor: User | None = None, actor_api_key: ApiKey | None = None
) -> None:
    locked = Membership.objects.select_for_update().get(pk=membership.pk)
    if locked.role == Role.OWNER:
        _refuse_last_owner(locked)
    audit_record(
        action="membership.remove",
        organization=locked.organization,
        actor=actor,
        actor_api_key=actor_api_key,
        obj=locked,
        before={"user": locked.user.email, "role": locked.role},
    )
    locked.delete()


def _refuse_last_owner(membership: Membership) -> None:
    owners = Membership.objects.select_for_update().filter(organization=membership.organization, role=Role.OWNER)
    if owners.exclude(pk=membership.pk).count() == 0:
        raise TenancyError("An organization needs at least one owner: make another member owner first.")

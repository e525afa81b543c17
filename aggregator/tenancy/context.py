"""Which organization a request acts for: the API key's, or the signed-in member's chosen one."""

from __future__ import annotations

from typing import Any

from aggregator.tenancy.models import ApiKey, Membership, Organization

SESSION_KEY = "organization_id"


def _cached(request: Any, name: str, compute: Any) -> Any:
    # DRF wraps the Django request; cache on the underlying one so both see the same value.
    target = getattr(request, "_request", request)
    if not hasattr(target, name):
        setattr(target, name, compute())
    return getattr(target, name)


def membership_for_request(request: Any) -> Membership | None:
    """The caller's membership in the organization the session has selected (or its first one)."""

    def compute() -> Membership | None:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return None
        memberships = Membership.objects.filter(user=user).select_related("organization")
        selected = request.session.get(SESSION_KEY) if hasattr(request, "session") else None
        if selected is not None:
            membership = memberships.filter(organization_id=selected).first()
            if membership is not None:
                return membership
        return memberships.order_by("created_at", "id").first()

    return _cached(request, "_tenancy_membership", compute)


def organization_for_request(request: Any) -> Organization | None:
    """The organization whose data this request may see; None when it may see none."""
    auth = getattr(request, "auth", None)
    if isinstance(auth, ApiKey):
        return auth.organization
    membership = membership_for_request(request)
    return membership.organization if membership else None


def actor_for_request(request: Any) -> dict[str, Any]:
    """Audit fields for whoever makes the request: a signed-in user or an API key."""
    auth = getattr(request, "auth", None)
    user = getattr(request, "user", None)
    return {
        "actor": user if user is not None and user.is_authenticated else None,
        "actor_api_key": auth if isinstance(auth, ApiKey) else None,
    }


def role_for_request(request: Any) -> str | None:
    auth = getattr(request, "auth", None)
    if isinstance(auth, ApiKey):
        return auth.role
    membership = membership_for_request(request)
    return membership.role if membership else None

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, permissions
from rest_framework.request import Request

from aggregator.tenancy.context import organization_for_request, role_for_request
from aggregator.tenancy.models import ROLE_RANK, ApiKey, Role


class IsOrganizationMember(permissions.BasePermission):
    """The caller acts for an organization. Reading needs any role; writing needs billing admin,
    or the view's ``write_role`` (e.g. owner for member management)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        signed_in = isinstance(request.auth, ApiKey) or bool(request.user and request.user.is_authenticated)
        if not signed_in:
            raise exceptions.NotAuthenticated()
        if organization_for_request(request) is None:
            raise exceptions.PermissionDenied("You are not a member of any organization: ask an owner to invite you.")
        role = role_for_request(request) or Role.VIEWER
        if request.method in permissions.SAFE_METHODS:
            return True
        needed = getattr(view, "write_role", Role.BILLING_ADMIN)
        if ROLE_RANK[Role(role)] < ROLE_RANK[Role(needed)]:
            raise exceptions.PermissionDenied(
                f"Your role ({Role(role).label}) cannot change this; it needs {Role(needed).label} or higher."
            )
        return True

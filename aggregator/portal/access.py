"""Who may see and change what in the portal.

Every portal page acts for the signed-in member's selected organization. Reading needs any role;
every form (POST) needs ``write_role`` (billing admin unless a view says otherwise) and is refused
with 403 before anything is looked up or changed. Views that take an object id add
``OrganizationScopedMixin``, so another organization's id is a 404.
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

from django.contrib.auth.mixins import LoginRequiredMixin
from django.http import HttpRequest, HttpResponseBase
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.views import View

from aggregator.tenancy.context import membership_for_request
from aggregator.tenancy.models import ROLE_RANK, Membership, Organization, Role, User


def can(membership: Membership | None, role: str) -> bool:
    return membership is not None and ROLE_RANK[Role(membership.role)] >= ROLE_RANK[Role(role)]


class PortalView(LoginRequiredMixin, View):
    """Base of the portal's pages: signed in, a member of an organization, role checked on writes."""

    write_role: ClassVar[str] = Role.BILLING_ADMIN
    membership: Membership
    organization: Organization
    user: User

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        membership = membership_for_request(request)
        if membership is None:
            return render(request, "portal/access/no_organization.html", status=403)
        self.membership = membership
        self.organization = membership.organization
        self.user = cast(User, request.user)
        if request.method not in ("GET", "HEAD", "OPTIONS") and not can(membership, self.write_role):
            message = _("Your role (%(role)s) cannot change this; it needs %(needed)s or higher.") % {
                "role": Role(membership.role).label,
                "needed": Role(self.write_role).label,
            }
            return render(request, "portal/access/forbidden.html", {"message": message}, status=403)
        return super().dispatch(request, *args, **kwargs)

    def base_context(self, **extra: Any) -> dict[str, Any]:
        return {
            "can_write": can(self.membership, self.write_role),
            "is_owner": can(self.membership, Role.OWNER),
            **extra,
        }

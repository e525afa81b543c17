from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from aggregator.tenancy.context import membership_for_request


def organization(request: HttpRequest) -> dict[str, Any]:
    membership = membership_for_request(request)
    user = getattr(request, "user", None)
    others = []
    if user is not None and user.is_authenticated:
        others = [
            m.organization for m in user.memberships.select_related("organization").order_by("organization__name")
        ]
    return {
        "current_membership": membership,
        "current_organization": membership.organization if membership else None,
        "user_organizations": others,
    }

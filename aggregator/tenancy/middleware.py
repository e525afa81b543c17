from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils.functional import SimpleLazyObject

from aggregator.tenancy.context import organization_for_request


class CurrentOrganizationMiddleware:
    """Expose ``request.organization`` (lazily) for portal views and templates."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.organization = SimpleLazyObject(lambda: organization_for_request(request))  # type: ignore[attr-defined]
        return self.get_response(request)

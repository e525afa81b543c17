"""Every route that takes an object id answers 404 to a member of another organization.

The routes are enumerated from the URL configuration, so a new route joins this test by itself;
a route that takes an id but is not tenant-scoped fails it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from rest_framework.test import APIClient
from rest_framework.views import APIView

from aggregator.tenancy.models import Organization, Role
from aggregator.tenancy.scoping import OrganizationScopedMixin
from aggregator.tenancy.services import api_key_create
from tests.factories import MembershipFactory, OrganizationFactory, create_for_organization

# Routes with captured arguments that are not customer object ids, with the reason.
NOT_OBJECT_ROUTES = {
    "admin/": "operator console: staff only, checked by Django admin permissions",
    "i18n/": "language switch",
    "api/schema/": "schema format selector",
    "password-reset/": "password-reset link: a signed user id and token, for people not signed in",
    "invitations/": "invitation link: a random token, for people who are not members yet",
}


@dataclass(frozen=True)
class Route:
    pattern: str
    callback: Any
    name: str  # namespaced, for reverse()
    kwargs: frozenset[str]


def _walk(resolvers: list[Any], prefix: str = "", namespace: str = "") -> list[Route]:
    routes: list[Route] = []
    for entry in resolvers:
        text = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            routes.extend(_walk(entry.url_patterns, text, inner))
        elif isinstance(entry, URLPattern):
            names = frozenset(re.findall(r"<(?:\w+:)?(\w+)>", text)) | frozenset(re.findall(r"\(\?P<(\w+)>", text))
            routes.append(Route(text, entry.callback, f"{namespace}{entry.name}" if entry.name else "", names))
    return routes


def _view_class(callback: Any) -> type | None:
    return getattr(callback, "cls", None) or getattr(callback, "view_class", None)


def object_routes() -> list[Route]:
    found = []
    for route in _walk(get_resolver().url_patterns):
        if any(route.pattern.startswith(p) for p in NOT_OBJECT_ROUTES):
            continue
        if route.kwargs - {"format"}:
            assert route.name, f"{route.pattern} takes arguments but has no name: name it so tests can reverse it."
            found.append(route)
    return found


def test_the_route_walk_finds_object_routes() -> None:
    # Guards the enumeration itself: if it finds nothing, the isolation test proves nothing.
    assert any("members" in r.pattern for r in object_routes())


@pytest.mark.parametrize("route", object_routes(), ids=lambda r: r.pattern)
@pytest.mark.parametrize("auth", ["session", "api_key"])
def test_member_of_another_organization_gets_404(route: Route, auth: str, db: Any) -> None:
    mine: Organization = OrganizationFactory()
    theirs: Organization = OrganizationFactory()
    cls = _view_class(route.callback)
    assert cls is not None and issubclass(cls, OrganizationScopedMixin), (
        f"{route.pattern} takes an object id but its view does not use OrganizationScopedMixin."
    )
    if auth == "api_key" and not issubclass(cls, APIView):
        pytest.skip("portal pages take a signed-in session, not API keys")
    model = cls.get_scoped_model(cls())  # type: ignore[arg-type]
    foreign = create_for_organization(model, theirs)
    own = create_for_organization(model, mine)

    client = APIClient()
    if auth == "session":
        member = MembershipFactory(organization=mine, role=Role.OWNER).user
        client.force_login(member)
    else:
        _key, raw = api_key_create(organization=mine, name="isolation", role=Role.OWNER)
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")

    lookup_field = getattr(cls, "lookup_field", "pk")

    def path_for(obj: Any) -> str:
        (arg,) = route.kwargs - {"format"}
        kwargs = {arg: getattr(obj, lookup_field)}
        if "format" in route.kwargs:
            kwargs["format"] = "json"
        return reverse(route.name, kwargs=kwargs)

    actions = getattr(route.callback, "actions", None)
    methods = sorted(actions) if actions else [m for m in ("get", "post", "patch", "put", "delete") if hasattr(cls, m)]
    methods = [m for m in methods if m in getattr(cls, "http_method_names", methods)]
    assert methods, f"{route.pattern} answers no method"
    for method in methods:
        response = getattr(client, method)(path_for(foreign), {}, format="json")
        if response.status_code == 403:
            # Refused for the caller's role whatever the object (e.g. operator-only actions): the
            # same answer for their own object, so nothing about the other organization leaks.
            assert getattr(client, method)(path_for(own), {}, format="json").status_code == 403
            continue
        assert response.status_code == 404, f"{method.upper()} {path_for(foreign)} -> {response.status_code}"
    # The same route serves the caller's own object, so the 404 above is about scoping. (Routes that
    # only accept POST act on the vendor; their lookup is the same get_object as the detail route.)
    if "get" in methods:
        assert client.get(path_for(own)).status_code == 200
    assert model._default_manager.filter(pk=foreign.pk).exists()

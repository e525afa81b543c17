"""Two-factor sign-in for the operator console: a staff user with a confirmed authenticator
(set up on the portal's Security page) gives its code after the password, on the portal's
verification step, and the console answers only sessions verified that way."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme


def _has_device(user: Any) -> bool:
    from aggregator.portal.security import confirmed_device

    return bool(user.is_authenticated and confirmed_device(user) is not None)


def install(site: admin.AdminSite) -> None:
    """Wrap ``site``'s login and permission check (call before ``site.urls`` is read)."""
    password_login = site.login
    has_permission = site.has_permission

    def login(request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if request.method == "POST":
            form = AdminAuthenticationForm(request, data=request.POST)
            if form.is_valid() and _has_device(form.get_user()):
                from aggregator.portal.security import two_factor_start

                next_url = request.GET.get("next") or request.POST.get("next") or ""
                if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
                    next_url = reverse("admin:index")
                return two_factor_start(request, user=form.get_user(), next_url=next_url)
        return password_login(request, extra_context)

    def verified_permission(request: HttpRequest) -> bool:
        if not has_permission(request):
            return False
        user: Any = request.user
        # A user with an authenticator must have given its code in this session (django-otp); a
        # verified session needs no look-up.
        return bool(getattr(user, "is_verified", lambda: False)()) or not _has_device(user)

    site.login = login  # type: ignore[method-assign]
    site.has_permission = verified_permission  # type: ignore[method-assign]

"""Customer portal: sign-in, organization switcher and the dashboard shell."""

from __future__ import annotations

from typing import cast

from django import forms
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from aggregator.tenancy.context import SESSION_KEY, organization_for_request
from aggregator.tenancy.models import Membership, User


class EmailAuthenticationForm(AuthenticationForm):
    username = forms.EmailField(
        label=_("Email"), widget=forms.EmailInput(attrs={"autofocus": True, "autocomplete": "email"})
    )

    def clean_username(self) -> str:
        return self.cleaned_data["username"].strip().lower()


class LoginView(auth_views.LoginView):
    template_name = "portal/login.html"
    authentication_form = EmailAuthenticationForm
    redirect_authenticated_user = True

    def form_valid(self, form: AuthenticationForm) -> HttpResponse:
        from aggregator.portal.security import confirmed_device, two_factor_start

        user = cast(User, form.get_user())
        if confirmed_device(user) is not None:  # two-factor: the password alone does not sign in
            return two_factor_start(self.request, user=user, next_url=self.get_success_url())
        return super().form_valid(form)


VENDOR_COLORS = ["#2952cc", "#d97706", "#059669", "#9333ea", "#dc2626", "#0891b2", "#4b5563"]


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    from aggregator.portal.selectors import dashboard_for

    organization = organization_for_request(request)
    context: dict[str, object] = {}
    if organization is not None:
        data = dashboard_for(organization=organization)
        vendors = sorted({vendor for _, by_vendor in data.daily for vendor in by_vendor})
        colors = {vendor: VENDOR_COLORS[i % len(VENDOR_COLORS)] for i, vendor in enumerate(vendors)}
        peak = max((sum(by_vendor.values()) for _, by_vendor in data.daily), default=0) or 1
        bars = [
            {
                "day": day,
                "total": sum(by_vendor.values()),
                "segments": [
                    {"vendor": v, "amount": a, "color": colors[v], "height": float(a / peak * 100)}
                    for v, a in sorted(by_vendor.items())
                ],
            }
            for day, by_vendor in data.daily
        ]
        change = None
        if data.last_month_same_days:
            change = (data.month_to_date - data.last_month_same_days) / data.last_month_same_days * 100
        context = {"data": data, "bars": bars, "legend": colors.items(), "change": change}
    return render(request, "portal/dashboard.html", context)


@login_required
@require_POST
def organization_switch(request: HttpRequest) -> HttpResponse:
    """Select which of the user's organizations the portal and the session API act for."""
    slug = request.POST.get("organization", "")
    membership = (
        Membership.objects.filter(user=cast(User, request.user), organization__slug=slug)
        .select_related("organization")
        .first()
    )
    if membership is None:
        messages.error(request, _("You are not a member of that organization."))
    else:
        request.session[SESSION_KEY] = membership.organization_id
        messages.success(request, _("Now working in %(name)s.") % {"name": membership.organization.name})
    target = request.POST.get("next") or reverse("portal:dashboard")
    if not url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        target = reverse("portal:dashboard")
    return HttpResponseRedirect(target)

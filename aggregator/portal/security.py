"""Portal: password reset by email (Django's views) and optional TOTP two-factor sign-in
(django-otp). With a confirmed authenticator, the password alone does not sign in: the login
page hands over to ``LoginVerifyView``, which asks for the current six-digit code."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from io import BytesIO
from typing import Any

import qrcode
import qrcode.image.svg
from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import PasswordResetForm
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse, reverse_lazy
from django.utils.decorators import method_decorator
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views import View
from django_otp import login as otp_login
from django_otp.plugins.otp_totp.models import TOTPDevice

from aggregator.tenancy.models import User
from aggregator.tenancy.services import audit_record

PENDING_USER = "portal_2fa_user"
PENDING_NEXT = "portal_2fa_next"
PENDING_BACKEND = "portal_2fa_backend"
DEVICE_NAME = "Authenticator app"


def confirmed_device(user: User) -> TOTPDevice | None:
    return TOTPDevice.objects.filter(user=user, confirmed=True).first()


def two_factor_start(request: HttpRequest, *, user: User, next_url: str) -> HttpResponse:
    """The password was right and the user has an authenticator: remember who is signing in
    (not signed in yet) and ask for the code."""
    request.session.cycle_key()
    request.session[PENDING_USER] = user.pk
    request.session[PENDING_NEXT] = next_url
    request.session[PENDING_BACKEND] = getattr(user, "backend", settings.AUTHENTICATION_BACKENDS[0])
    return HttpResponseRedirect(reverse("portal:login-verify"))


class CodeForm(forms.Form):
    code = forms.CharField(
        label=gettext_lazy("Six-digit code"),
        max_length=8,
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "pattern": "[0-9 ]*", "autofocus": True}
        ),
        help_text=gettext_lazy("The code your authenticator app shows now."),
    )

    def clean_code(self) -> str:
        code = "".join(str(self.cleaned_data["code"]).split())
        if not code.isdigit() or len(code) != 6:
            raise forms.ValidationError(_("Enter the six digits your authenticator app shows."))
        return code


class LoginVerifyView(View):
    """Second step of signing in: the code from the authenticator app."""

    def _pending(self, request: HttpRequest) -> tuple[User, TOTPDevice] | None:
        pk = request.session.get(PENDING_USER)
        user = User.objects.filter(pk=pk, is_active=True).first() if pk else None
        device = confirmed_device(user) if user else None
        return (user, device) if user and device else None

    def get(self, request: HttpRequest) -> HttpResponse:
        if self._pending(request) is None:
            return HttpResponseRedirect(reverse("portal:login"))
        return render(request, "portal/security/verify.html", {"form": CodeForm()})

    def post(self, request: HttpRequest) -> HttpResponse:
        pending = self._pending(request)
        if pending is None:
            return HttpResponseRedirect(reverse("portal:login"))
        user, device = pending
        form = CodeForm(request.POST)
        if form.is_valid():
            allowed, _details = device.verify_is_allowed()
            if not allowed:
                form.add_error("code", _("Too many wrong codes: wait a minute, then try again."))
            elif device.verify_token(form.cleaned_data["code"]):
                next_url = request.session.get(PENDING_NEXT) or reverse(settings.LOGIN_REDIRECT_URL)
                backend = request.session.get(PENDING_BACKEND)
                for key in (PENDING_USER, PENDING_NEXT, PENDING_BACKEND):
                    request.session.pop(key, None)
                login(request, user, backend=backend)
                otp_login(request, device)
                if not url_has_allowed_host_and_scheme(
                    next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
                ):
                    next_url = reverse(settings.LOGIN_REDIRECT_URL)
                return HttpResponseRedirect(next_url)
            else:
                form.add_error("code", _("That code is not right (or was already used): try the next one."))
        return render(request, "portal/security/verify.html", {"form": form}, status=400)


def _qr_svg(uri: str) -> str:
    image = qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathImage, box_size=8, border=2)
    buffer = BytesIO()
    image.save(buffer)
    # Embedded as an image (data URI): an image's SVG cannot run scripts.
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode()


@method_decorator(login_required, name="dispatch")
class SecurityView(View):
    """Two-factor sign-in for the signed-in user: set up (QR code or secret, then confirm with a
    code), or turn off (with a current code). Only the user's own devices are touched."""

    def _context(self, request: HttpRequest, **extra: Any) -> dict[str, Any]:
        user: User = request.user  # type: ignore[assignment]
        device = confirmed_device(user)
        setup = None
        if device is None:
            setup = TOTPDevice.objects.filter(user=user, confirmed=False).first()
        context: dict[str, Any] = {"device": device, "setup": setup, "form": CodeForm()}
        if setup is not None:
            uri = setup.config_url
            context.update(
                otpauth_uri=uri,
                secret=base64.b32encode(setup.bin_key).decode(),
                qr_src=_qr_svg(uri),
            )
        context.update(extra)
        return context

    def get(self, request: HttpRequest) -> HttpResponse:
        return render(request, "portal/security/security.html", self._context(request))

    def post(self, request: HttpRequest) -> HttpResponse:
        user: User = request.user  # type: ignore[assignment]
        action = request.POST.get("action")
        if action == "start":
            if confirmed_device(user) is None:
                TOTPDevice.objects.filter(user=user, confirmed=False).delete()
                TOTPDevice.objects.create(user=user, name=DEVICE_NAME, confirmed=False)
            return HttpResponseRedirect(reverse("portal:security"))
        if action == "cancel":
            TOTPDevice.objects.filter(user=user, confirmed=False).delete()
            return HttpResponseRedirect(reverse("portal:security"))
        if action not in ("confirm", "disable"):
            return HttpResponseRedirect(reverse("portal:security"))
        device = (
            TOTPDevice.objects.filter(user=user, confirmed=False).first()
            if action == "confirm"
            else confirmed_device(user)
        )
        if device is None:
            return HttpResponseRedirect(reverse("portal:security"))
        form = CodeForm(request.POST)
        if form.is_valid() and device.verify_token(form.cleaned_data["code"]):
            if action == "confirm":
                device.confirmed = True
                device.save(update_fields=["confirmed"])
                otp_login(request, device)
                audit_record(action="two_factor.enable", actor=user, obj=user)
                messages.success(request, _("Two-factor sign-in is on: signing in now asks for a code."))
            else:
                TOTPDevice.objects.filter(user=user).delete()
                audit_record(action="two_factor.disable", actor=user, obj=user)
                messages.success(request, _("Two-factor sign-in is off."))
            return HttpResponseRedirect(reverse("portal:security"))
        if form.is_valid():
            form.add_error("code", _("That code is not right: check the time on your phone and try the next code."))
        return render(request, "portal/security/security.html", self._context(request, form=form), status=400)


# --- Password reset: Django's views with the portal's templates and names -----------------------


class PortalPasswordResetForm(PasswordResetForm):
    """Also for members who never had a password (created by an operator or an import): the reset
    link is how they set their first one."""

    def get_users(self, email: str) -> Iterator[User]:
        return iter(User.objects.filter(email__iexact=email.strip(), is_active=True))


class PasswordResetView(auth_views.PasswordResetView):
    template_name = "registration/password_reset_form.html"
    email_template_name = "registration/password_reset_email.txt"
    subject_template_name = "registration/password_reset_subject.txt"
    success_url = reverse_lazy("portal:password-reset-done")

    form_class = PortalPasswordResetForm

    def form_valid(self, form: Any) -> HttpResponse:
        # Links in emails point at the public address, whatever host the request came through.
        self.extra_email_context = {"site_url": settings.SITE_URL}
        return super().form_valid(form)


class PasswordResetDoneView(auth_views.PasswordResetDoneView):
    template_name = "registration/password_reset_done.html"


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    template_name = "registration/password_reset_confirm.html"
    success_url = reverse_lazy("portal:password-reset-complete")


class PasswordResetCompleteView(auth_views.PasswordResetCompleteView):
    template_name = "registration/password_reset_complete.html"

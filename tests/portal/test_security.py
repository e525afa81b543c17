"""Password reset by email and optional TOTP two-factor sign-in."""

from __future__ import annotations

import re
from typing import Any

from django.core import mail
from django.test import Client
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from aggregator.tenancy.models import AuditEvent, User
from aggregator.tenancy.services import user_get_or_create
from tests.portal.conftest import text

PASSWORD = "correct horse battery staple"


def _code(device: TOTPDevice, *, offset: int = 0) -> str:
    return f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits) + offset:06d}"[-6:]


def _reset_link(body: str) -> str:
    match = re.search(r"https?://[^/\s]+(/password-reset/[^/\s]+/[^/\s]+/)", body)
    assert match, body
    return match.group(1)


def test_a_password_reset_email_leads_to_a_new_password(owner: User, settings: Any) -> None:
    settings.SITE_URL = "https://billing.example.test"
    client = Client()
    assert 'id="forgot-password"' in text(client.get("/login/"))
    response = client.post("/password-reset/", {"email": "OWNER@acme.test"}, follow=True)
    assert "If an account uses that address" in text(response)
    (message,) = mail.outbox
    assert message.to == ["owner@acme.test"]
    assert message.subject == "Choose a new password for AI Invoice Aggregator"
    assert "https://billing.example.test/password-reset/" in message.body
    link = _reset_link(message.body)
    form_page = client.get(link, follow=True)
    assert 'id="password-set-submit"' in text(form_page)
    set_url = form_page.redirect_chain[-1][0]
    done = client.post(
        set_url, {"new_password1": "a new long passphrase 7", "new_password2": "a new long passphrase 7"}, follow=True
    )
    assert "Your new password is set." in text(done)
    assert (
        Client().post("/login/", {"username": "owner@acme.test", "password": "a new long passphrase 7"}).status_code
        == 302
    )
    assert "not valid any more" in text(Client().get(link, follow=True))  # the link works once


def test_a_member_without_a_password_sets_the_first_one_by_reset(db: Any) -> None:
    user_get_or_create(email="first@acme.test")
    Client().post("/password-reset/", {"email": "first@acme.test"})
    assert len(mail.outbox) == 1 and "/password-reset/" in mail.outbox[0].body


def test_an_unknown_address_gets_the_same_page_and_no_email(db: Any) -> None:
    response = Client().post("/password-reset/", {"email": "nobody@acme.test"}, follow=True)
    assert "If an account uses that address" in text(response)
    assert mail.outbox == []


def test_mismatched_new_passwords_are_refused_clearly(owner: User) -> None:
    client = Client()
    client.post("/password-reset/", {"email": "owner@acme.test"})
    set_url = client.get(_reset_link(mail.outbox[0].body), follow=True).redirect_chain[-1][0]
    response = client.post(set_url, {"new_password1": "a new long passphrase 7", "new_password2": "different 7"})
    assert "The two password fields didn’t match." in text(response)


def _enable_two_factor(client: Client, user: User) -> TOTPDevice:
    client.post("/security/", {"action": "start"})
    device = TOTPDevice.objects.get(user=user, confirmed=False)
    page = text(client.get("/security/"))
    assert 'id="two-factor-qr"' in page and "data:image/svg+xml;base64," in page
    assert "otpauth://totp/AI%20Invoice%20Aggregator%3Aowner%40acme.test?secret=" in page
    response = client.post("/security/", {"action": "confirm", "code": _code(device)}, follow=True)
    assert "Two-factor sign-in is on" in text(response)
    device.refresh_from_db()
    assert device.confirmed
    return device


def test_two_factor_setup_then_sign_in_asks_for_the_code(owner: User) -> None:
    client = Client()
    client.force_login(owner)
    device = _enable_two_factor(client, owner)
    assert AuditEvent.objects.filter(action="two_factor.enable", actor=owner).exists()

    fresh = Client()
    response = fresh.post("/login/", {"username": "owner@acme.test", "password": PASSWORD, "next": "/credits/"})
    assert response["Location"] == "/login/verify/"
    assert fresh.get("/").status_code == 302  # not signed in yet
    wrong = fresh.post("/login/verify/", {"code": "12345"})
    assert wrong.status_code == 400 and "Enter the six digits your authenticator app shows." in text(wrong)
    # The setup used this time step's code, and a code is accepted once: start from a fresh device state.
    TOTPDevice.objects.filter(pk=device.pk).update(throttling_failure_count=0, last_t=-1)
    device.refresh_from_db()
    response = fresh.post("/login/verify/", {"code": _code(device)})
    assert response["Location"] == "/credits/"
    assert fresh.get("/").status_code == 200


def test_a_wrong_code_does_not_sign_in(owner: User) -> None:
    client = Client()
    client.force_login(owner)
    device = _enable_two_factor(client, owner)
    fresh = Client()
    fresh.post("/login/", {"username": "owner@acme.test", "password": PASSWORD})
    wrong = f"{(int(_code(device)) + 500000) % 1000000:06d}"
    response = fresh.post("/login/verify/", {"code": wrong})
    assert response.status_code == 400 and "That code is not right" in text(response)
    assert fresh.get("/").status_code == 302


def test_verify_without_a_password_step_goes_back_to_sign_in(db: Any) -> None:
    assert Client().post("/login/verify/", {"code": "123456"})["Location"] == "/login/"


def test_turning_two_factor_off_needs_a_current_code(owner: User) -> None:
    client = Client()
    client.force_login(owner)
    device = _enable_two_factor(client, owner)
    TOTPDevice.objects.filter(pk=device.pk).update(last_t=-1)
    response = client.post(
        "/security/", {"action": "disable", "code": "000000" if _code(device) != "000000" else "111111"}
    )
    assert response.status_code == 400 and TOTPDevice.objects.filter(user=owner).exists()
    TOTPDevice.objects.filter(pk=device.pk).update(throttling_failure_count=0)
    device.refresh_from_db()
    client.post("/security/", {"action": "disable", "code": _code(device)})
    assert not TOTPDevice.objects.filter(user=owner).exists()
    assert Client().post("/login/", {"username": "owner@acme.test", "password": PASSWORD}).status_code == 302
    assert AuditEvent.objects.filter(action="two_factor.disable", actor=owner).exists()


def test_the_security_page_renders_for_every_role(as_viewer: Client) -> None:
    page = text(as_viewer.get("/security/"))
    assert 'id="two-factor-start"' in page


def test_a_staff_member_with_two_factor_gives_the_code_to_open_the_console(owner: User) -> None:
    User.objects.filter(pk=owner.pk).update(is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(owner)
    device = _enable_two_factor(client, owner)
    # A session signed in without the code (e.g. one that began before two-factor was on) is not enough.
    other = Client()
    other.force_login(owner)
    assert other.get("/admin/")["Location"].startswith("/admin/login/")

    fresh = Client()
    response = fresh.post("/admin/login/?next=/admin/billing/invoice/", {"username": "owner@acme.test",
                                                                       "password": PASSWORD})  # fmt: skip
    assert response["Location"] == "/login/verify/"
    assert fresh.get("/admin/").status_code == 302  # not in yet
    TOTPDevice.objects.filter(pk=device.pk).update(throttling_failure_count=0, last_t=-1)
    device.refresh_from_db()
    response = fresh.post("/login/verify/", {"code": _code(device)})
    assert response["Location"] == "/admin/billing/invoice/"
    assert fresh.get("/admin/billing/invoice/").status_code == 200


def test_a_staff_member_without_two_factor_signs_in_to_the_console_with_the_password(owner: User) -> None:
    User.objects.filter(pk=owner.pk).update(is_staff=True, is_superuser=True)
    fresh = Client()
    response = fresh.post("/admin/login/?next=/admin/", {"username": "owner@acme.test", "password": PASSWORD})
    assert response["Location"] == "/admin/"
    assert fresh.get("/admin/").status_code == 200

"""The customer portal walked in headless Chromium: sign in, link a vendor account and see it sync,
the dashboard's figures against the API's, credits and top-up rules, invoices (PDF, card payment
through localstripe's Stripe.js stand-in), and the portal in Japanese.

Screenshots of each main page go to the folder the test report names (tests/e2e/plugin.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from django.utils import translation
from playwright.sync_api import Page, expect

from aggregator.tenancy.models import User
from tests.e2e.browser import sign_in

pytestmark = pytest.mark.e2e

Shot = Callable[[str], Path]


def test_sign_in_with_a_wrong_password_then_the_right_one(page: Page, customer: User, shot: Shot) -> None:
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/$"))
    shot("login")
    page.fill("#id_username", "owner@acme.test")
    page.fill("#id_password", "not the password")
    page.click("main form button[type=submit]")
    expect(page.get_by_role("alert")).to_contain_text("correct email")
    page.fill("#id_password", "correct horse battery staple")
    page.click("main form button[type=submit]")
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.locator("h1")).to_have_text("Dashboard")
    expect(page.locator(".org-name")).to_have_text("Acme Corp")
    expect(page.locator(".who")).to_have_text("owner@acme.test")
    shot("dashboard-empty")


def test_the_portal_switches_to_japanese_and_stays_so(page: Page, customer: User, shot: Shot) -> None:
    sign_in(page)
    expect(page.locator("html")).to_have_attribute("lang", "en")
    page.select_option("#lang-select", "ja")
    page.click("form.lang button[type=submit]")
    expect(page.locator("html")).to_have_attribute("lang", "ja")
    expect(page.locator("h1")).to_have_text(japanese("Dashboard"))
    page.goto("/")  # the choice is remembered (language cookie)
    expect(page.locator("html")).to_have_attribute("lang", "ja")
    expect(page.locator("#lang-select")).to_have_value("ja")
    shot("dashboard-ja")


def japanese(message: str) -> str:
    """The Japanese catalog's translation of ``message``; fails when there is none."""
    with translation.override("ja"):
        translated = translation.gettext(message)
    assert translated != message, f"No Japanese translation of {message!r} in locale/ja"
    return translated

"""Helpers the browser tests share."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Page

from tests.e2e.plugin import screenshots_dir

PASSWORD = "correct horse battery staple"  # tests.factories.UserFactory's


def sign_in(page: Page, email: str = "owner@acme.test", password: str = PASSWORD) -> None:
    page.goto("/login/")
    page.fill("#id_username", email)
    page.fill("#id_password", password)
    page.click("main form button[type=submit]")
    page.wait_for_url(re.compile(r"/$"))


def save_screenshot(page: Page, name: str) -> Path:
    folder = screenshots_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path

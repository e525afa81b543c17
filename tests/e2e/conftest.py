"""Fixtures of the browser tests: headless Chromium (Debian's ``chromium``, driven by Playwright), the
portal on a live server, sandbox vendor servers and localstripe.

The live server (pytest-django ``live_server``) runs the project in a thread of the test process,
on a transactional database. Celery runs eager in tests, so what a page queues (a sync, a webhook's
processing) runs inline in the server's thread, against the sandbox servers started here.

Playwright's sync API keeps an event loop running in the test's thread while a browser is open, which
Django takes for an async context; the test's own ORM calls (fixtures, checks) are plain synchronous
code, so ``DJANGO_ALLOW_ASYNC_UNSAFE`` is set while the browser is open (module scope: it is closed
before pytest moves on to another module).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from aggregator.tenancy.models import Organization, Role, User
from billing.payments.gateways import FAKE_GATEWAY
from providers.sandbox.anthropic import AnthropicSandbox
from providers.sandbox.base import SandboxServer
from providers.sandbox.openai import OpenAISandbox
from tests.billing import localstripe as localstripe_fixtures
from tests.billing.localstripe import SECRET_KEY, LocalStripe
from tests.e2e.browser import save_screenshot
from tests.factories import MembershipFactory, OrganizationFactory

# Debian's chromium as root in a container: no sandbox, no GPU, nothing fetched in the background.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 10_000
expect.set_options(timeout=TIMEOUT_MS)

STRIPE_GATEWAY = "billing.payments.gateways.stripe.StripeGateway"
PUBLISHABLE_KEY = "pk_test_FAKE_localstripe_0000"
WEBHOOK_SECRET = "whsec_FAKE_e2e_secret_0000"

# The localstripe fixtures (a session-wide server, emptied for each test).
localstripe_server = localstripe_fixtures.localstripe_server
localstripe = localstripe_fixtures.localstripe


# --- Browser -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium() -> str:
    """The path of Debian's chromium; the browser tests are skipped when it is not installed."""
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("chromium is not installed: run scripts/system-deps.sh (apt-get install chromium)")
    return path


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Browser]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
            yield browser
            browser.close()


_CALL_FAILED = pytest.StashKey[bool]()  # whether the test itself failed, for the page fixture


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_CALL_FAILED] = report.failed
    return report


@pytest.fixture
def context(browser: Browser, live_server: Any) -> Iterator[BrowserContext]:
    context = browser.new_context(
        base_url=live_server.url, locale="en-US", viewport={"width": 1280, "height": 900}, accept_downloads=True
    )
    context.set_default_timeout(TIMEOUT_MS)
    yield context
    context.close()


@pytest.fixture
def page(context: BrowserContext, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh tab on the live server (``page.goto("/")``); a failing test leaves a screenshot of it."""
    page = context.new_page()
    yield page
    if request.node.stash.get(_CALL_FAILED, False):
        name = re.sub(r"[^\w.-]+", "-", request.node.name)
        save_screenshot(page, f"FAILED-{name}")


@pytest.fixture
def shot(page: Page) -> Callable[[str], Path]:
    """``shot("dashboard")`` saves a full-page screenshot of the tab as ``dashboard.png``."""
    return lambda name: save_screenshot(page, name)


# --- Data and servers ----------------------------------------------------------------------------


@pytest.fixture
def customer(transactional_db: Any) -> User:
    """The owner of "Acme Corp" (USD), who signs in with ``tests.e2e.browser.PASSWORD``."""
    organization = OrganizationFactory(slug="acme", name="Acme Corp", currency="USD", country="US")
    return MembershipFactory(organization=organization, role=Role.OWNER, user__email="owner@acme.test").user


@pytest.fixture
def organization(customer: User) -> Organization:
    return Organization.objects.get(slug="acme")


@pytest.fixture
def sandboxes() -> Iterator[dict[str, SandboxServer]]:
    """Vendor sandboxes on free loopback ports, by vendor: what a linked account syncs from."""
    servers = {
        "openai": SandboxServer(OpenAISandbox()).start(),
        "anthropic": SandboxServer(AnthropicSandbox()).start(),
    }
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def stripe_live(settings: Any, localstripe: LocalStripe, live_server: Any) -> LocalStripe:
    """The Stripe gateway pointed at localstripe: its API, its Stripe.js stand-in, and its signed
    webhooks delivered to the live server's ``/webhooks/stripe/``."""
    settings.PAYMENT_GATEWAYS = [FAKE_GATEWAY, STRIPE_GATEWAY]
    settings.STRIPE_SECRET_KEY = SECRET_KEY
    settings.STRIPE_PUBLISHABLE_KEY = PUBLISHABLE_KEY
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_API_BASE = localstripe.url
    settings.STRIPE_JS_URL = f"{localstripe.url}/js.stripe.com/v3/"
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    settings.SITE_URL = live_server.url
    localstripe.webhook("e2e", url=f"{live_server.url}/webhooks/stripe/", secret=WEBHOOK_SECRET)
    return localstripe

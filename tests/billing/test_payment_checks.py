"""Which payment methods the pay page offers, and the ``check --deploy`` warnings when a method's
settings are missing."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from billing.payments.availability import payment_methods_available

STRIPE = {
    "STRIPE_SECRET_KEY": "sk_test_FAKE_checks",
    "STRIPE_PUBLISHABLE_KEY": "pk_test_FAKE_checks",
    "STRIPE_WEBHOOK_SECRET": "whsec_FAKE_checks",
}
PAYPAL = {
    "PAYPAL_CLIENT_ID": "FAKE-client-id",
    "PAYPAL_CLIENT_SECRET": "FAKE-client-secret",
    "PAYPAL_WEBHOOK_ID": "FAKE-webhook-id",
}


@pytest.fixture
def configured(settings: Any) -> Any:
    for name, value in {**STRIPE, **PAYPAL}.items():
        setattr(settings, name, value)
    settings.SILENCED_SYSTEM_CHECKS = []
    return settings


def deploy_warnings() -> list[tuple[str, str, str]]:
    return [(m.id or "", m.msg, m.hint or "") for m in run_checks(include_deployment_checks=True, tags=["payments"])]


def test_every_method_is_offered_when_its_settings_are_set(configured: Any) -> None:
    assert payment_methods_available() == {"card": True, "google_pay": True, "paypal": True}
    assert deploy_warnings() == []


@pytest.mark.parametrize("missing", sorted(STRIPE))
def test_without_a_stripe_setting_cards_and_google_pay_are_hidden(configured: Any, missing: str) -> None:
    setattr(configured, missing, "")
    assert payment_methods_available() == {"card": False, "google_pay": False, "paypal": True}
    ((check_id, message, hint),) = deploy_warnings()
    assert check_id == "billing.W001"
    assert message == (
        f"Stripe is not configured: {missing} is empty. Card and Google Pay payments will be hidden on the pay page."
    )
    assert "STRIPE_WEBHOOK_SECRET (whsec_…" in hint


def test_without_paypal_settings_paypal_is_hidden(configured: Any) -> None:
    configured.PAYPAL_CLIENT_ID = "  "
    del configured.PAYPAL_WEBHOOK_ID  # not even defined: read with a default
    assert payment_methods_available(organization=None) == {"card": True, "google_pay": True, "paypal": False}
    ((check_id, message, hint),) = deploy_warnings()
    assert check_id == "billing.W002"
    assert message == (
        "PayPal is not configured: PAYPAL_CLIENT_ID, PAYPAL_WEBHOOK_ID are empty. "
        "PayPal will be hidden on the pay page."
    )
    assert 'SILENCED_SYSTEM_CHECKS = ["billing.W002"]' in hint


def test_nothing_configured_warns_about_both(configured: Any) -> None:
    for name in {**STRIPE, **PAYPAL}:
        setattr(configured, name, "")
    assert payment_methods_available() == {"card": False, "google_pay": False, "paypal": False}
    assert [check_id for check_id, _m, _h in deploy_warnings()] == ["billing.W001", "billing.W002"]


def test_live_and_test_stripe_keys_mixed_are_flagged(configured: Any) -> None:
    configured.STRIPE_SECRET_KEY = "sk_live_FAKE_checks"
    ((check_id, message, _hint),) = deploy_warnings()
    assert check_id == "billing.W003"
    assert message.startswith("STRIPE_SECRET_KEY is a live key but STRIPE_PUBLISHABLE_KEY is a test key")


def test_the_warnings_fail_check_deploy_and_can_be_silenced(configured: Any) -> None:
    configured.PAYPAL_CLIENT_SECRET = ""
    assert run_checks(tags=["payments"]) == []  # only with --deploy
    with pytest.raises(SystemCheckError, match=r"billing\.W002"):
        call_command("check", "--deploy", "--tag", "payments", "--fail-level", "WARNING", stdout=StringIO())
    configured.SILENCED_SYSTEM_CHECKS = ["billing.W002"]
    out = StringIO()
    call_command("check", "--deploy", "--tag", "payments", "--fail-level", "WARNING", stdout=out)
    assert "no issues (1 silenced)" in out.getvalue()

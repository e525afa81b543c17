"""``manage.py check --deploy``: warn when a payment method cannot be offered, and why.

An operator who does not want a method (say, no PayPal) silences its warning with
``SILENCED_SYSTEM_CHECKS = ["billing.W002"]``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Warning, register

from billing.payments.availability import PAYPAL_SETTINGS, STRIPE_SETTINGS, missing_settings


def _listed(names: list[str]) -> str:
    return ", ".join(names)


@register("payments", deploy=True)
def payment_settings_check(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """One warning per payment gateway whose settings are incomplete, naming what the pay page hides."""
    messages: list[CheckMessage] = []
    stripe_missing = missing_settings(STRIPE_SETTINGS)
    if stripe_missing:
        messages.append(
            Warning(
                f"Stripe is not configured: {_listed(stripe_missing)} "
                f"{'is' if len(stripe_missing) == 1 else 'are'} empty. Card and Google Pay payments will be "
                "hidden on the pay page.",
                hint="Set STRIPE_SECRET_KEY (sk_live_…), STRIPE_PUBLISHABLE_KEY (pk_live_…) and "
                "STRIPE_WEBHOOK_SECRET (whsec_…, the signing secret of the /webhooks/stripe/ endpoint) "
                "in the environment.",
                id="billing.W001",
            )
        )
    paypal_missing = missing_settings(PAYPAL_SETTINGS)
    if paypal_missing:
        messages.append(
            Warning(
                f"PayPal is not configured: {_listed(paypal_missing)} "
                f"{'is' if len(paypal_missing) == 1 else 'are'} empty. PayPal will be hidden on the pay page.",
                hint="Set PAYPAL_CLIENT_ID and PAYPAL_CLIENT_SECRET (the REST app's credentials) and "
                "PAYPAL_WEBHOOK_ID (the id PayPal gave the webhook registered for this site) in the environment, "
                'or silence this check (SILENCED_SYSTEM_CHECKS = ["billing.W002"]) if PayPal is not offered.',
                id="billing.W002",
            )
        )
    secret = str(getattr(settings, "STRIPE_SECRET_KEY", "") or "")
    publishable = str(getattr(settings, "STRIPE_PUBLISHABLE_KEY", "") or "")
    if secret and publishable and _mode(secret) != _mode(publishable):
        messages.append(
            Warning(
                f"STRIPE_SECRET_KEY is a {_mode(secret)} key but STRIPE_PUBLISHABLE_KEY is a {_mode(publishable)} "
                "key: Stripe.js payments would fail.",
                hint="Use the secret and publishable keys of the same mode (both live or both test).",
                id="billing.W003",
            )
        )
    return messages


def _mode(key: str) -> str:
    """``live`` or ``test`` from a Stripe key's prefix (``sk_live_…``, ``pk_test_…``, ``rk_live_…``)."""
    return "live" if "_live_" in key else "test"

"""Which payment methods the pay page may offer, from the settings each one needs.

A method whose settings are missing is hidden rather than shown broken; ``check --deploy`` warns
about it (``billing.payments.checks``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings

if TYPE_CHECKING:
    from aggregator.tenancy.models import Organization

# The settings each gateway needs before customers may use it. Without the webhook secret or id,
# payments would go through but never be confirmed (invoices are paid only by verified events).
STRIPE_SETTINGS = ("STRIPE_SECRET_KEY", "STRIPE_PUBLISHABLE_KEY", "STRIPE_WEBHOOK_SECRET")
PAYPAL_SETTINGS = ("PAYPAL_CLIENT_ID", "PAYPAL_CLIENT_SECRET", "PAYPAL_WEBHOOK_ID")


def missing_settings(names: tuple[str, ...]) -> list[str]:
    """The names among ``names`` that are unset or blank."""
    return [name for name in names if not str(getattr(settings, name, "") or "").strip()]


def payment_methods_available(*, organization: Organization | None = None) -> dict[str, bool]:
    """``{"card": …, "google_pay": …, "paypal": …}``: whether each is configured. Cards and
    Google Pay go through Stripe (Google Pay is a card wallet there), PayPal through PayPal.
    Availability is site-wide today; ``organization`` is accepted so callers need not change when
    a method is limited per organization."""
    stripe_ready = not missing_settings(STRIPE_SETTINGS)
    return {"card": stripe_ready, "google_pay": stripe_ready, "paypal": not missing_settings(PAYPAL_SETTINGS)}

"""The registry of payment gateways, by slug, from the ``PAYMENT_GATEWAYS`` setting (dotted paths).

Each configured class is instantiated once per process, so a gateway may keep a client (and the
test gateway its script and records) between calls.
"""

from __future__ import annotations

import threading
from typing import TypeVar

from django.conf import settings
from django.utils.module_loading import import_string

from billing.payments.gateways.base import Gateway, PaymentConfigurationError

FAKE_GATEWAY = "billing.payments.gateways.fake.FakeGateway"
PAYPAL_GATEWAY = "billing.payments.gateways.paypal.PayPalGateway"  # offered once PAYPAL_CLIENT_ID is set

_instances: dict[str, Gateway] = {}
_lock = threading.Lock()


def gateway_paths() -> list[str]:
    """The configured gateway classes. Without the setting, the test gateway only in DEBUG (and tests)."""
    default = [FAKE_GATEWAY] if settings.DEBUG else []
    return list(getattr(settings, "PAYMENT_GATEWAYS", default))


def gateways() -> dict[str, Gateway]:
    """Every configured gateway, by slug."""
    found: dict[str, Gateway] = {}
    for path in gateway_paths():
        with _lock:
            if path not in _instances:
                try:
                    _instances[path] = import_string(path)()
                except ImportError as exc:
                    raise PaymentConfigurationError(
                        f"PAYMENT_GATEWAYS lists {path!r}, which cannot be imported ({exc}): fix the setting."
                    ) from None
            gateway = _instances[path]
        found[gateway.slug] = gateway
    return found


def gateway_for(slug: str) -> Gateway:
    """The gateway with this slug, or ``PaymentConfigurationError`` saying which ones exist."""
    available = gateways()
    try:
        return available[slug]
    except KeyError:
        names = ", ".join(sorted(available)) or "none"
        raise PaymentConfigurationError(
            f"No payment gateway {slug!r} is configured (configured: {names}): add its class to PAYMENT_GATEWAYS."
        ) from None


GatewayType = TypeVar("GatewayType", bound=Gateway)


def gateway_of_type(slug: str, kind: type[GatewayType]) -> GatewayType:
    """The gateway with this slug, which must be a ``kind`` (e.g. the Stripe gateway for the
    Stripe-specific flows), or ``PaymentConfigurationError``."""
    gateway = gateway_for(slug)
    if not isinstance(gateway, kind):
        raise PaymentConfigurationError(
            f"The gateway with slug {slug!r} is {type(gateway).__name__}, not {kind.__name__}: fix PAYMENT_GATEWAYS."
        )
    return gateway

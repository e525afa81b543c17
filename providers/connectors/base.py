"""The connector contract: what every vendor module offers, in frozen dataclasses.

A connector speaks one vendor's HTTP API and returns normalized rows. Nothing outside the
vendor's module knows its JSON; nothing inside it knows the database.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, Protocol, runtime_checkable

import httpx


@dataclass(frozen=True)
class CredentialField:
    """One field of a vendor's credential object, as the API and portal ask for it."""

    name: str
    label: str
    help: str
    secret: bool = True
    required: bool = True


@dataclass(frozen=True)
class AccountRef:
    """What a connector needs of a linked account. ``credentials`` is decrypted, in memory only."""

    vendor: str
    credentials: Mapping[str, str] = field(repr=False)
    api_base: str | None = None
    label: str = ""


@dataclass(frozen=True)
class Window:
    """A half-open UTC time window [start, end)."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("Window bounds must be timezone-aware (UTC).")
        if self.end <= self.start:
            raise ValueError(f"Window end {self.end.isoformat()} must be after its start {self.start.isoformat()}.")


@dataclass(frozen=True)
class CostRow:
    """One billed-cost row, FOCUS-shaped. ``source_key`` is stable for the same vendor bucket and
    grouping, so that fetching the same bucket again updates the row instead of adding one."""

    source_key: str
    charge_period_start: datetime
    charge_period_end: datetime
    billed_cost: Decimal
    billing_currency: str  # upper-case ISO 4217
    service_name: str = ""  # the model, or the vendor's service
    charge_description: str = ""  # the line item, e.g. "gpt-4o, input"
    project: str = ""  # project / workspace id, "" when none
    consumed_quantity: Decimal | None = None
    consumed_unit: str = ""


@dataclass(frozen=True)
class UsageRow:
    """A consumed quantity (tokens, requests, images…) by model, without a price."""

    source_key: str
    charge_period_start: datetime
    charge_period_end: datetime
    service_name: str
    quantity: Decimal
    unit: str  # e.g. "input_tokens", "output_tokens", "requests", "images", "characters", "seconds"
    project: str = ""


@dataclass(frozen=True)
class Balance:
    """A balance the vendor reports (OpenRouter, DeepSeek), in the vendor's currency."""

    amount: Decimal
    currency: str
    observed_at: datetime
    details: Mapping[str, Decimal] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    message: str


# --- Errors: every vendor failure maps to one of these, with a message that says what to do. ---


class ConnectorError(Exception):
    """Base of connector failures. Messages never contain credentials."""

    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, vendor: str = "", endpoint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.vendor = vendor
        self.endpoint = endpoint


class CredentialsRejected(ConnectorError):
    """401/403, or the wrong kind of key (e.g. an OpenAI project key where an admin key is needed)."""


class CreditsExhausted(ConnectorError):
    """The vendor says the prepaid credits ran out (OpenAI ``insufficient_quota``): alert, do not retry."""


class TransientVendorError(ConnectorError):
    """429, 5xx or a timeout that outlived the retries: try the whole sync again later."""

    retryable = True


class MalformedPayload(ConnectorError):
    """The vendor answered with something that is not the documented shape (HTML, truncated JSON,
    a missing or mistyped field). The run fails and writes nothing."""


class NotSupported(ConnectorError):
    """The vendor offers no such data (e.g. DeepSeek has no cost history)."""


# --- The protocol and the registry ----------------------------------------------------------


@runtime_checkable
class Connector(Protocol):
    slug: ClassVar[str]
    display_name: ClassVar[str]
    default_api_base: ClassVar[str]
    credential_fields: ClassVar[tuple[CredentialField, ...]]
    # Which of "costs", "usage", "balance" the vendor offers.
    capabilities: ClassVar[frozenset[str]]

    def __init__(
        self, account: AccountRef, *, transport: httpx.BaseTransport | None = None, **options: Any
    ) -> None: ...

    def check_credentials(self) -> CheckResult: ...

    def fetch_costs(self, window: Window) -> list[CostRow]: ...

    def fetch_usage(self, window: Window) -> list[UsageRow]: ...

    def fetch_balance(self) -> Balance | None: ...


ConnectorFactory = Callable[..., Connector]
_REGISTRY: dict[str, type[Connector]] = {}


def register(cls: Any) -> Any:
    """Class decorator: make a connector available under its ``slug``."""
    _REGISTRY[cls.slug] = cls
    return cls


def connector_classes() -> dict[str, type[Connector]]:
    from providers import connectors  # noqa: F401  (imports every vendor module)

    return dict(_REGISTRY)


def connector_for(account: AccountRef, *, transport: httpx.BaseTransport | None = None, **options: Any) -> Connector:
    """The connector for ``account.vendor``. ``transport`` lets benches swap the network; ``options``
    (e.g. ``sleep``) reach the connector's constructor."""
    classes = connector_classes()
    try:
        cls = classes[account.vendor]
    except KeyError:
        raise ConnectorError(
            f"No connector for vendor {account.vendor!r}: use one of {', '.join(sorted(classes))}."
        ) from None
    return cls(account, transport=transport, **options)

"""DeepSeek: the account balance, the only billing data DeepSeek's API offers (vendor-apis.md §4.1).

``GET /user/balance`` lists one entry per currency (CNY or USD), amounts as decimal strings in major units.
``fetch_balance`` picks one entry: the USD one when the account holds several currencies, otherwise the only
one. ``Balance.amount`` is its ``total_balance``; ``details`` carries ``granted_balance``, ``topped_up_balance``,
``is_available`` as ``Decimal(1)`` (the balance suffices for API calls) or ``Decimal(0)``, and, for every other
currency held, ``total_balance_<CUR>`` (e.g. ``total_balance_CNY``) so no money goes unseen.

DeepSeek has no cost or usage history, so ``fetch_costs`` and ``fetch_usage`` raise ``NotSupported``, as every
method outside a connector's ``capabilities`` does: consumption is derived from balance changes net of the
purchases recorded in the ledger.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import ClassVar, TypeVar

import httpx

from providers.connectors.base import (
    AccountRef,
    Balance,
    CheckResult,
    CostRow,
    CredentialField,
    CredentialsRejected,
    MalformedPayload,
    NotSupported,
    UsageRow,
    Window,
    register,
)
from providers.connectors.http import VendorHttpClient
from providers.connectors.payload import Payload

VENDOR = "DeepSeek"
BALANCE_PATH = "/user/balance"
PREFERRED_CURRENCY = "USD"
API_KEYS_URL = "https://platform.deepseek.com/api_keys"
AUTH_HINT = f"check that the API key was copied whole and is still active, or create a new one at {API_KEYS_URL}."
NO_HISTORY = "DeepSeek reports only a balance; consumption is derived from balance changes net of recorded purchases."

T = TypeVar("T")


@register
class DeepSeekConnector:
    slug: ClassVar[str] = "deepseek"
    display_name: ClassVar[str] = "DeepSeek"
    default_api_base: ClassVar[str] = "https://api.deepseek.com"
    credential_fields: ClassVar[tuple[CredentialField, ...]] = (
        CredentialField(
            name="api_key",
            label="API key",
            help=f"Create an API key (sk-…) at {API_KEYS_URL}; any key of the account can read its balance.",
        ),
    )
    capabilities: ClassVar[frozenset[str]] = frozenset({"balance"})

    def __init__(
        self,
        account: AccountRef,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.account = account
        self.api_base = (account.api_base or self.default_api_base).rstrip("/")
        self._transport = transport
        self._sleep = sleep

    # --- the contract -------------------------------------------------------------------------

    def check_credentials(self) -> CheckResult:
        try:
            self.fetch_balance()
        except CredentialsRejected as exc:
            return CheckResult(False, exc.message)
        return CheckResult(True, "DeepSeek accepted the API key; the balance is readable.")

    def fetch_costs(self, window: Window) -> list[CostRow]:
        raise NotSupported(NO_HISTORY, vendor=VENDOR)

    def fetch_usage(self, window: Window) -> list[UsageRow]:
        raise NotSupported(NO_HISTORY, vendor=VENDOR)

    def fetch_balance(self) -> Balance:
        with self._session() as http:
            body = Payload(vendor=VENDOR, endpoint=BALANCE_PATH, data=http.get_json(BALANCE_PATH))
        is_available = _required(body.bool("is_available"))
        entries = {_currency(entry): entry for entry in body.list("balance_infos")}
        if not entries:
            raise MalformedPayload(
                f"{VENDOR} {BALANCE_PATH} returned no balance entry (field 'balance_infos' is empty); "
                "try again later, and check the account in the DeepSeek platform if it persists.",
                vendor=VENDOR,
                endpoint=BALANCE_PATH,
            )
        currency = PREFERRED_CURRENCY if PREFERRED_CURRENCY in entries else next(iter(entries))
        chosen = entries[currency]
        details = {
            "granted_balance": _required(chosen.decimal("granted_balance")),
            "topped_up_balance": _required(chosen.decimal("topped_up_balance")),
            "is_available": Decimal(1) if is_available else Decimal(0),
        }
        for other, entry in entries.items():
            if other != currency:
                details[f"total_balance_{other}"] = _required(entry.decimal("total_balance"))
        return Balance(
            amount=_required(chosen.decimal("total_balance")),
            currency=currency,
            observed_at=datetime.now(UTC),
            details=details,
        )

    # --- HTTP ---------------------------------------------------------------------------------

    def _api_key(self) -> str:
        key = (self.account.credentials.get("api_key") or "").strip()
        if not key:
            raise CredentialsRejected(f"No DeepSeek API key is saved for this account: {AUTH_HINT}", vendor=VENDOR)
        return key

    @contextmanager
    def _session(self) -> Iterator[VendorHttpClient]:
        http = VendorHttpClient(
            vendor=VENDOR,
            base_url=self.api_base,
            headers={"Authorization": f"Bearer {self._api_key()}"},
            auth_hint=AUTH_HINT,
            transport=self._transport,
            sleep=self._sleep,
        )
        try:
            yield http
        finally:
            # A transport passed in belongs to the caller (benches share one); closing our client would close it.
            if self._transport is None:
                http.close()


def _currency(entry: Payload) -> str:
    code = _required(entry.str("currency")).strip().upper()
    if len(code) != 3 or not code.isalpha():
        raise MalformedPayload(
            f"{VENDOR} {BALANCE_PATH} returned an unexpected payload: field '{entry.path}.currency' should be an "
            f"ISO 4217 code, got {code[:40]!r}.",
            vendor=VENDOR,
            endpoint=BALANCE_PATH,
        )
    return code


def _required(value: T | None) -> T:
    # Payload's non-optional readers already raise on a missing field; this only narrows the type.
    assert value is not None
    return value

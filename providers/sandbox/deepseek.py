"""A local DeepSeek ``GET /user/balance`` (vendor-apis.md §4.1).

Served as documented: ``{"is_available": bool, "balance_infos": [{"currency", "total_balance",
"granted_balance", "topped_up_balance"}]}`` with amounts as decimal **strings** with two places, one entry per
currency held. It starts at the documented CNY 110.00 (10.00 granted + 100.00 topped up).

Keys: ``Authorization: Bearer sk-…``; anything else, or a key in ``revoked_keys``, gets DeepSeek's 401
``authentication_error`` JSON.

Knobs to simulate consumption: ``set_balance(currency, granted=…, topped_up=…)``, ``spend(amount, currency)``
(which, like DeepSeek, draws on the granted balance first), ``top_up(amount, currency)``, ``remove_currency`` and
``available`` (``None`` derives ``is_available`` from a positive total).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from providers.sandbox.base import SandboxRequest, SandboxResponse, SandboxVendor

BALANCE_PATH = "/user/balance"
KEY_PREFIX = "sk-"
CENTS = Decimal("0.01")


@dataclass
class Holding:
    granted: Decimal
    topped_up: Decimal

    @property
    def total(self) -> Decimal:
        return self.granted + self.topped_up


class DeepSeekSandbox(SandboxVendor):
    vendor = "deepseek"

    def __init__(self, *, seed: str = "demo") -> None:
        super().__init__(seed=seed)
        self.holdings: dict[str, Holding] = {"CNY": Holding(granted=Decimal("10.00"), topped_up=Decimal("100.00"))}
        self.available: bool | None = None
        self.revoked_keys: set[str] = set()

    # --- knobs --------------------------------------------------------------------------------

    def set_balance(self, currency: str, *, granted: Decimal, topped_up: Decimal) -> None:
        with self._lock:
            self.holdings[currency] = Holding(granted=granted, topped_up=topped_up)

    def remove_currency(self, currency: str) -> None:
        with self._lock:
            self.holdings.pop(currency, None)

    def spend(self, amount: Decimal, currency: str = "CNY") -> None:
        with self._lock:
            holding = self.holdings[currency]
            from_granted = min(amount, holding.granted)
            holding.granted -= from_granted
            holding.topped_up -= amount - from_granted

    def top_up(self, amount: Decimal, currency: str = "CNY") -> None:
        with self._lock:
            holding = self.holdings.setdefault(currency, Holding(Decimal(0), Decimal(0)))
            holding.topped_up += amount

    # --- routing ------------------------------------------------------------------------------

    def route(self, request: SandboxRequest) -> SandboxResponse:
        if request.path != BALANCE_PATH:
            return _error(404, "Not Found", "invalid_request_error")
        if request.method != "GET":
            return _error(405, "Method Not Allowed", "invalid_request_error")
        authorization = request.headers.get("authorization", "")
        key = authorization.removeprefix("Bearer ").strip() if authorization.startswith("Bearer ") else ""
        if not key.startswith(KEY_PREFIX) or key in self.revoked_keys:
            return _error(401, "Authentication Fails, Your api key is invalid", "authentication_error")
        return SandboxResponse(200, self.balance_body())

    def balance_body(self) -> dict[str, object]:
        with self._lock:
            infos = [
                {
                    "currency": currency,
                    "total_balance": _money(holding.total),
                    "granted_balance": _money(holding.granted),
                    "topped_up_balance": _money(holding.topped_up),
                }
                for currency, holding in self.holdings.items()
            ]
            total = sum((holding.total for holding in self.holdings.values()), Decimal(0))
            available = self.available if self.available is not None else total > 0
        return {"is_available": available, "balance_infos": infos}


def _money(value: Decimal) -> str:
    return str(value.quantize(CENTS))


def _error(status: int, message: str, kind: str) -> SandboxResponse:
    return SandboxResponse(
        status, {"error": {"message": message, "type": kind, "param": None, "code": "invalid_request_error"}}
    )

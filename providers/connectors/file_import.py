"""Accounts at vendors with no billing API (Mistral, Cohere, Groq, any other): their costs arrive
by CSV import (`POST /api/v1/imports/costs/`, format in docs/cost-import-format.md), not by sync."""

from __future__ import annotations

from typing import Any, ClassVar

import httpx

from providers.connectors.base import (
    AccountRef,
    Balance,
    CheckResult,
    CostRow,
    CredentialField,
    NotSupported,
    UsageRow,
    Window,
    register,
)

_HOW = "Costs of this account arrive by CSV import (POST /api/v1/imports/costs/); there is nothing to fetch."


@register
class FileImportConnector:
    slug: ClassVar[str] = "file_import"
    display_name: ClassVar[str] = "Other vendor (CSV import)"
    default_api_base: ClassVar[str] = ""
    credential_fields: ClassVar[tuple[CredentialField, ...]] = ()
    capabilities: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, account: AccountRef, *, transport: httpx.BaseTransport | None = None, **options: Any) -> None:
        self.account = account

    def check_credentials(self) -> CheckResult:
        return CheckResult(ok=True, message=_HOW)

    def fetch_costs(self, window: Window) -> list[CostRow]:
        raise NotSupported(_HOW, vendor=self.display_name)

    def fetch_usage(self, window: Window) -> list[UsageRow]:
        raise NotSupported(_HOW, vendor=self.display_name)

    def fetch_balance(self) -> Balance | None:
        raise NotSupported(_HOW, vendor=self.display_name)

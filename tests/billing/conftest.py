from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from aggregator.tenancy.models import Organization
from providers.models import CostRecord, VendorAccount
from tests.factories import VendorAccountFactory

DAY = date(2026, 11, 10)


def cost(
    account: VendorAccount, day: date, amount: str, *, key: str | None = None, currency: str = "USD"
) -> CostRecord:
    """Write (or restate) one cost row of ``account`` on ``day``."""
    start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    record, _ = CostRecord.objects.update_or_create(
        vendor_account=account,
        source_key=key or f"cost:{day}:{currency}",
        defaults={
            "organization_id": account.organization_id,
            "vendor": account.vendor,
            "charge_period_start": start,
            "charge_period_end": start + timedelta(days=1),
            "billed_cost": Decimal(amount),
            "billing_currency": currency,
            "service_name": "gpt-4o",
            "updated_at": datetime.now(UTC),
        },
    )
    return record


@pytest.fixture
def vendor_account(organization: Organization) -> VendorAccount:
    return VendorAccountFactory(organization=organization, vendor="openai", label="OpenAI")


@pytest.fixture
def make_cost() -> Any:
    return cost

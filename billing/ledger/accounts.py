"""The ledger accounts the flows use, by key. Vendor-side accounts are in the vendor's currency;
customer-side accounts in the organization's invoice currency. Revenue accounts are per
organization so settlements of different customers never wait on one hot row."""

from __future__ import annotations

from dataclasses import dataclass

from billing.ledger.models import LedgerAccount

Kind = LedgerAccount.Kind


@dataclass(frozen=True)
class AccountSpec:
    key: str
    kind: str
    currency: str
    organization_id: int | None = None
    vendor_account_id: int | None = None


def vendor_prepaid(vendor_account_id: int, organization_id: int, currency: str) -> AccountSpec:
    """Credits available at the vendor (asset)."""
    return AccountSpec(
        f"vendor_prepaid:{vendor_account_id}:{currency}", Kind.ASSET, currency, organization_id, vendor_account_id
    )


def vendor_funding(vendor_account_id: int, organization_id: int, currency: str) -> AccountSpec:
    """Where purchased credits came from (the money paid to the vendor)."""
    return AccountSpec(
        f"vendor_funding:{vendor_account_id}:{currency}", Kind.EQUITY, currency, organization_id, vendor_account_id
    )


def vendor_grants(vendor_account_id: int, organization_id: int, currency: str) -> AccountSpec:
    """Free credits the vendor granted."""
    return AccountSpec(
        f"vendor_grants:{vendor_account_id}:{currency}", Kind.INCOME, currency, organization_id, vendor_account_id
    )


def vendor_consumption(vendor_account_id: int, organization_id: int, currency: str) -> AccountSpec:
    """Credits consumed (expense)."""
    return AccountSpec(
        f"vendor_consumption:{vendor_account_id}:{currency}", Kind.EXPENSE, currency, organization_id, vendor_account_id
    )


def vendor_expired(vendor_account_id: int, organization_id: int, currency: str) -> AccountSpec:
    """Credits that expired unused (expense)."""
    return AccountSpec(
        f"vendor_expired:{vendor_account_id}:{currency}", Kind.EXPENSE, currency, organization_id, vendor_account_id
    )


def receivable(organization_id: int, currency: str) -> AccountSpec:
    """What the customer owes (consolidated mode, and overage in wallet mode)."""
    return AccountSpec(f"receivable:{organization_id}:{currency}", Kind.ASSET, currency, organization_id)


def customer_wallet(organization_id: int, currency: str) -> AccountSpec:
    """The customer's prepaid wallet (a liability: a credit balance is money held for the customer)."""
    return AccountSpec(f"customer_wallet:{organization_id}:{currency}", Kind.LIABILITY, currency, organization_id)


def revenue_consumption(organization_id: int, currency: str) -> AccountSpec:
    return AccountSpec(f"revenue:consumption:{organization_id}:{currency}", Kind.INCOME, currency, organization_id)


def revenue_fees(organization_id: int, currency: str) -> AccountSpec:
    return AccountSpec(f"revenue:fees:{organization_id}:{currency}", Kind.INCOME, currency, organization_id)


def cash(gateway: str, currency: str) -> AccountSpec:
    return AccountSpec(f"cash:{gateway}:{currency}", Kind.ASSET, currency)

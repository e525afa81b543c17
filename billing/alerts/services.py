"""Evaluating alert conditions and telling billing admins, once per ongoing condition."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone

from aggregator.tenancy.models import Membership, Organization, Role
from billing.alerts.models import Alert, AlertPolicy
from billing.ledger import accounts
from billing.ledger.models import LedgerTransaction
from billing.ledger.posting import storage_amount
from billing.ledger.selectors import (
    BURN_WINDOW_DAYS,
    burn_rate,
    daily_amounts,
    runway,
    vendor_prepaid_balance,
    wallet_runway,
)
from providers.models import VendorAccount

logger = logging.getLogger(__name__)
Kind = Alert.Kind


@dataclass(frozen=True)
class Condition:
    kind: str
    active: bool
    message: str = ""
    details: dict[str, Any] | None = None


def alert_policy_for(organization: Organization) -> AlertPolicy:
    return AlertPolicy.objects.filter(organization=organization).first() or AlertPolicy(organization=organization)


def vendor_account_conditions(*, account: VendorAccount, today: date, policy: AlertPolicy) -> list[Condition]:
    label = account.label
    yesterday = today - timedelta(days=1)
    cur, balance = vendor_prepaid_balance(vendor_account=account)
    # The 15 days up to yesterday: the last of them against the 14 before (anomaly); the last
    # BURN_WINDOW_DAYS of them are the runway's burn window (vendor_account_runway), read once here.
    spent = daily_amounts(
        account_key=accounts.vendor_consumption(account.pk, account.organization_id, cur).key,
        kind=LedgerTransaction.Kind.CONSUMPTION,
        end_day=yesterday,
        days=max(15, BURN_WINDOW_DAYS),
    )
    result = runway(
        balance=balance,
        currency=cur,
        burn=burn_rate(spent[-BURN_WINDOW_DAYS:]),
        today=today,
    )
    low = (policy.low_balance_amount is not None and result.balance < policy.low_balance_amount) or (
        result.runway_days is not None and result.runway_days < policy.low_balance_days
    )
    soon = result.depletion_date is not None and result.depletion_date <= today + timedelta(
        days=policy.depletion_within_days
    )
    baseline, last = burn_rate(spent[-15:-1]), spent[-1]
    anomaly = baseline > 0 and last > baseline * Decimal(policy.anomaly_factor)
    hours = policy.sync_failing_hours
    failing = account.failure_streak > 0 and (
        account.last_success_at is None or timezone.now() - account.last_success_at > timedelta(hours=hours)
    )
    facts = {
        "balance": str(result.balance),
        "currency": cur,
        "runway_days": str(result.runway_days),
        "depletion_date": result.depletion_date.isoformat() if result.depletion_date else None,
    }
    return [
        Condition(
            Kind.LOW_BALANCE,
            low,
            f"{label}: balance {result.balance:.2f} {cur}, about "
            f"{result.runway_days} days left at {result.burn_rate_per_day:.2f} {cur}/day. Top up or set a rule.",
            facts,
        ),
        Condition(
            Kind.DEPLETION_SOON,
            soon,
            f"{label}: credits are expected to run out on {result.depletion_date}. "
            "Buy credits or add a top-up rule before then.",
            facts,
        ),
        Condition(
            Kind.SPEND_ANOMALY,
            anomaly,
            f"{label}: {last:.2f} {cur} spent on {yesterday}, over "
            f"{policy.anomaly_factor} times the usual {baseline:.2f} {cur}/day. Check for runaway jobs or leaked keys.",
            {
                "spent": str(storage_amount(last)),
                "baseline": str(storage_amount(baseline)),
                "day": yesterday.isoformat(),
            },
        ),
        Condition(
            Kind.CREDITS_EXHAUSTED,
            account.status == VendorAccount.Status.CREDITS_EXHAUSTED,
            f"{label}: the vendor reports the prepaid credits are exhausted; API calls are failing. Buy credits now.",
        ),
        Condition(
            Kind.SYNC_FAILING,
            failing,
            f"{label}: syncing has failed {account.failure_streak} time(s) and "
            f"nothing succeeded for over {hours} hours. {account.status_message or 'See the sync runs.'}",
        ),
    ]


def wallet_conditions(*, organization: Organization, today: date, policy: AlertPolicy) -> list[Condition]:
    if organization.billing_mode != Organization.BillingMode.PREPAID_WALLET:
        return []
    result = wallet_runway(organization=organization, today=today)
    cur = result.currency
    low = (policy.low_balance_amount is not None and result.balance < policy.low_balance_amount) or (
        result.runway_days is not None and result.runway_days < policy.low_balance_days
    )
    beyond = result.balance < -Decimal(organization.credit_limit)
    return [
        Condition(
            Kind.LOW_BALANCE,
            low,
            f"Prepaid wallet: {result.balance:.2f} {cur} left, about {result.runway_days} days. Top up the wallet.",
            {"balance": str(result.balance)},
        ),
        Condition(
            Kind.CREDIT_LIMIT_EXCEEDED,
            beyond,
            f"Prepaid wallet: {result.balance:.2f} {cur} is past the "
            f"credit limit of {organization.credit_limit:.2f} {cur}. Top up now; the overage is invoiced.",
            {"balance": str(result.balance), "credit_limit": str(organization.credit_limit)},
        ),
    ]


def alerts_apply(
    *,
    organization: Organization,
    subject: str,
    conditions: list[Condition],
    vendor_account: VendorAccount | None = None,
) -> list[Alert]:
    """Open an alert for each active condition that has none open; resolve those that cleared.
    Returns the alerts opened now (each told once to the billing admins)."""
    opened: list[Alert] = []
    if not conditions:
        return opened
    open_now = {
        alert.kind: alert
        for alert in Alert.objects.filter(
            organization=organization, subject=subject, status=Alert.Status.OPEN, kind__in=[c.kind for c in conditions]
        )
    }
    for condition in conditions:
        current = open_now.get(condition.kind)
        if condition.active and current is None:
            try:
                with transaction.atomic():
                    alert = Alert.objects.create(
                        organization=organization,
                        vendor_account=vendor_account,
                        kind=condition.kind,
                        subject=subject,
                        message=condition.message,
                        details=condition.details or {},
                    )
            except IntegrityError:  # a concurrent evaluation opened it first
                continue
            transaction.on_commit(partial(alert_notify, alert_id=alert.pk))
            opened.append(alert)
        elif not condition.active and current is not None:
            Alert.objects.filter(pk=current.pk).update(status=Alert.Status.RESOLVED, resolved_at=timezone.now())
    return opened


def alerts_evaluate_vendor_account(*, account: VendorAccount, today: date | None = None) -> list[Alert]:
    today = today or timezone.now().date()
    policy = alert_policy_for(account.organization)
    opened = alerts_apply(
        organization=account.organization,
        subject=f"va:{account.pk}",
        vendor_account=account,
        conditions=vendor_account_conditions(account=account, today=today, policy=policy),
    )
    opened += alerts_apply(
        organization=account.organization,
        subject="wallet",
        conditions=wallet_conditions(organization=account.organization, today=today, policy=policy),
    )
    return opened


def billing_contacts(organization: Organization) -> list[str]:
    emails = set(
        Membership.objects.filter(
            organization=organization, role__in=[Role.OWNER, Role.BILLING_ADMIN], user__is_active=True
        ).values_list("user__email", flat=True)
    )
    if organization.billing_email:
        emails.add(organization.billing_email)
    return sorted(emails)


def alert_notify(*, alert_id: int) -> None:
    """Email the organization's billing contacts about a new alert, once."""
    with transaction.atomic():
        alert = Alert.objects.select_for_update().select_related("organization").get(pk=alert_id)
        if alert.notified_at is not None:
            return
        recipients = billing_contacts(alert.organization)
        if recipients:
            send_mail(
                subject=f"[{alert.organization.name}] {alert.get_kind_display()}",
                message=f"{alert.message}\n\nSee all alerts: {settings.SITE_URL}/\n",
                from_email=None,
                recipient_list=recipients,
            )
        alert.notified_at = timezone.now()
        alert.save(update_fields=["notified_at"])

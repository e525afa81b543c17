"""Reads for top-ups: a rule's target balance (counting open top-ups), its month's total, what is
due for a retry, who hears about it, and the plain-words preview of a rule."""

from __future__ import annotations

from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal

from django.db.models import Q, QuerySet, Sum

from aggregator.money import quantize
from aggregator.tenancy.models import Membership, Organization, Role
from billing.ledger.selectors import Runway, runway, vendor_account_runway, wallet_runway
from billing.topups.models import TargetKind, TopUp, TopUpRule


def target_runway(*, rule: TopUpRule, today: date) -> Runway:
    """Balance, burn rate and runway of the rule's target, from the ledger."""
    if rule.target_kind == TargetKind.WALLET:
        return wallet_runway(organization=rule.organization, today=today)
    assert rule.vendor_account is not None
    return vendor_account_runway(vendor_account=rule.vendor_account, today=today, currency=rule.currency)


def _same_target(rule: TopUpRule) -> Q:
    if rule.target_kind == TargetKind.WALLET:
        return Q(organization_id=rule.organization_id, target_kind=TargetKind.WALLET)
    return Q(vendor_account_id=rule.vendor_account_id, target_kind=TargetKind.VENDOR_ACCOUNT)


def open_top_ups_amount(*, rule: TopUpRule) -> Decimal:
    """What open top-ups of the rule's target will add once paid (any rule of the same target)."""
    total = TopUp.objects.filter(_same_target(rule), currency=rule.currency, status__in=TopUp.OPEN_STATUSES).aggregate(
        total=Sum("amount")
    )["total"]
    return Decimal(total or 0)


def target_runway_with_open_top_ups(*, rule: TopUpRule, today: date) -> Runway:
    """The target's runway as if its open top-ups were already paid: one shortfall, one top-up."""
    current = target_runway(rule=rule, today=today)
    balance = current.balance + open_top_ups_amount(rule=rule)
    return runway(balance=balance, currency=current.currency, burn=current.burn_rate_per_day, today=today)


def month_top_ups_amount(*, rule: TopUpRule, month: date) -> Decimal:
    """What the rule charged (or is charging) in ``month``: succeeded plus open top-ups."""
    statuses = [TopUp.Status.SUCCEEDED, *TopUp.OPEN_STATUSES]
    total = TopUp.objects.filter(rule=rule, month=month, status__in=statuses).aggregate(total=Sum("amount"))["total"]
    return Decimal(total or 0)


def top_ups_due(*, now: datetime) -> QuerySet[TopUp]:
    """Top-ups whose next attempt (or the recovery of an interrupted one, or the expiry of a
    confirmation link) is due."""
    return TopUp.objects.filter(status__in=TopUp.OPEN_STATUSES, next_attempt_at__lte=now).order_by("next_attempt_at")


def billing_contacts(*, organization: Organization) -> list[str]:
    """Who hears about top-ups: the organization's owners and billing admins, and its billing email."""
    emails = list(
        Membership.objects.filter(organization=organization, role__in=[Role.OWNER, Role.BILLING_ADMIN],
                                  user__is_active=True)
        .order_by("created_at", "id")
        .values_list("user__email", flat=True)
    )  # fmt: skip
    if organization.billing_email and organization.billing_email.lower() not in emails:
        emails.append(organization.billing_email.lower())
    return emails


def planned_amount(*, rule: TopUpRule, balance: Decimal) -> Decimal:
    """The top-up for a target at ``balance``: the fixed amount, or up to the target balance
    (rounded up to the currency's minor unit), clamped to the rule's minimum and maximum."""
    if rule.method == TopUpRule.Method.FIXED:
        assert rule.amount is not None
        amount = Decimal(rule.amount)
    else:
        assert rule.target_balance is not None
        amount = quantize(Decimal(rule.target_balance) - balance, rule.currency, rounding="ROUND_CEILING")
    amount = max(amount, Decimal(rule.minimum_amount))
    if rule.maximum_amount is not None:
        amount = min(amount, Decimal(rule.maximum_amount))
    return amount


def trigger_fires(*, rule: TopUpRule, current: Runway) -> bool:
    if rule.trigger == TopUpRule.Trigger.BALANCE_BELOW:
        assert rule.threshold_amount is not None
        return current.balance < rule.threshold_amount
    assert rule.threshold_days is not None
    # Nothing being spent: the runway is endless, whatever the balance.
    return current.runway_days is not None and current.runway_days < rule.threshold_days


def money_text(amount: Decimal, currency: str) -> str:
    """An amount as a customer reads it: rounded to the currency's minor unit, with its code."""
    return f"{quantize(Decimal(amount), currency, rounding='ROUND_HALF_UP')} {currency}"


def top_up_rule_preview(*, rule: TopUpRule, today: date) -> str:
    """A sentence for the portal, e.g. "At the current burn rate of 20.00 USD a day this tops up
    500.00 USD about every 25 days."."""
    burn = target_runway(rule=rule, today=today).burn_rate_per_day
    if burn <= 0:
        return "Nothing is being spent at the moment, so this rule would not top up."
    if rule.trigger == TopUpRule.Trigger.BALANCE_BELOW:
        assert rule.threshold_amount is not None
        trigger_balance = Decimal(rule.threshold_amount)
    else:
        assert rule.threshold_days is not None
        trigger_balance = burn * Decimal(rule.threshold_days)
    size = planned_amount(rule=rule, balance=trigger_balance)
    rate = f"At the current burn rate of {money_text(burn, rule.currency)} a day"
    if size <= 0:
        return f"{rate} this rule would not top up: its target balance is not above the threshold."
    days = (size / burn).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    every = "more than once a day" if days < 1 else "about every day" if days == 1 else f"about every {days} days"
    text = f"{rate} this tops up {money_text(size, rule.currency)} {every}."
    if rule.monthly_cap is not None and burn * 30 > rule.monthly_cap:
        text += f" The monthly cap of {money_text(rule.monthly_cap, rule.currency)} runs out before the month ends."
    return text

"""Reads for dunning: the policy that applies to an invoice, and the operators' dunning queue."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet

from billing.payments.dunning.models import DunningCase, DunningPolicy


def dunning_policy_for(*, issuer_id: int) -> DunningPolicy:
    """The issuer's policy, or the default one (days 1, 3, 5, 7; written off 7 days later)."""
    return DunningPolicy.objects.filter(issuer_id=issuer_id).first() or DunningPolicy.default()


def dunning_queue() -> QuerySet[DunningCase]:
    """The active cases, the next due first: what the operator console lists as the dunning queue."""
    return (
        DunningCase.objects.filter(state=DunningCase.State.ACTIVE)
        .select_related("invoice", "organization", "blocked_method")
        .order_by("next_step_at", "pk")
    )


def dunning_cases_due(*, now: datetime) -> QuerySet[DunningCase]:
    """Active cases whose next step is due at ``now``."""
    return DunningCase.objects.filter(state=DunningCase.State.ACTIVE, next_step_at__lte=now).order_by(
        "next_step_at", "pk"
    )

"""The operator dashboard (/admin/dashboard/): AI spend under management, receivables, overdue
invoices, failing syncs and failed top-ups. Every figure is one aggregate query per currency group,
and every list is capped, so the page costs the same for ten customers or ten thousand."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from django.core.exceptions import PermissionDenied
from django.db.models import Count, DecimalField, ExpressionWrapper, F, QuerySet, Sum
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.translation import gettext as _

from aggregator.money import AMOUNT_DECIMAL_PLACES, AMOUNT_MAX_DIGITS
from billing.invoicing.models import Invoice
from billing.topups.models import TopUp
from providers.models import CostRecord, VendorAccount

# Rows listed per section; the totals count every row.
LIST_LIMIT = 10
# Failed top-ups of this many recent days are counted and listed.
FAILED_TOP_UP_DAYS = 30

UNPAID = (Invoice.Status.OPEN, Invoice.Status.PARTIALLY_PAID)


@dataclass(frozen=True)
class CurrencyTotal:
    currency: str
    amount: Decimal
    count: int


@dataclass(frozen=True)
class OperatorFigures:
    today: date
    month_start: date
    last_month_start: date
    spend_month_to_date: list[CurrencyTotal]
    spend_last_month: list[CurrencyTotal]
    receivables: list[CurrencyTotal]
    overdue: list[CurrencyTotal]
    failing_accounts_count: int
    failing_accounts: list[VendorAccount]
    failed_top_ups_count: int
    failed_top_ups: list[TopUp]


def _month_start(day: date) -> date:
    return day.replace(day=1)


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _spend(start: date, end: date) -> list[CurrencyTotal]:
    """Vendor cost of the charge periods starting in [start, end), per billing currency."""
    rows = (
        CostRecord.objects.filter(charge_period_start__gte=_midnight(start), charge_period_start__lt=_midnight(end))
        .values("billing_currency")
        .annotate(amount=Sum("billed_cost"), count=Count("id"))
        .order_by("billing_currency")
    )
    return [CurrencyTotal(r["billing_currency"], r["amount"], r["count"]) for r in rows]


def _unpaid_totals(invoices: QuerySet[Invoice]) -> list[CurrencyTotal]:
    # Invoice.balance_due: the amount due less credit notes and net payments.
    outstanding = ExpressionWrapper(
        F("amount_due") - F("amount_credited") - F("amount_paid") + F("amount_refunded"),
        output_field=DecimalField(max_digits=AMOUNT_MAX_DIGITS, decimal_places=AMOUNT_DECIMAL_PLACES),
    )
    rows = invoices.values("currency").annotate(amount=Sum(outstanding), count=Count("id")).order_by("currency")
    return [CurrencyTotal(r["currency"], r["amount"], r["count"]) for r in rows]


def failing_accounts() -> QuerySet[VendorAccount]:
    """Accounts whose last syncs failed (disabled ones are not expected to sync)."""
    return VendorAccount.objects.filter(failure_streak__gt=0).exclude(status=VendorAccount.Status.DISABLED)


def operator_figures(*, today: date | None = None) -> OperatorFigures:
    """The dashboard's figures as of ``today`` (UTC date)."""
    today = today or timezone.now().date()
    month_start = _month_start(today)
    last_month_start = _month_start(month_start - timedelta(days=1))
    unpaid = Invoice.objects.filter(status__in=UNPAID)
    failing = failing_accounts()
    failed_top_ups = TopUp.objects.filter(
        status=TopUp.Status.FAILED, created_at__gte=_midnight(today - timedelta(days=FAILED_TOP_UP_DAYS))
    )
    return OperatorFigures(
        today=today,
        month_start=month_start,
        last_month_start=last_month_start,
        spend_month_to_date=_spend(month_start, today + timedelta(days=1)),
        spend_last_month=_spend(last_month_start, month_start),
        receivables=_unpaid_totals(unpaid),
        overdue=_unpaid_totals(unpaid.filter(due_date__lt=today)),
        failing_accounts_count=failing.count(),
        failing_accounts=list(
            failing.select_related("organization").order_by("-failure_streak", "last_success_at")[:LIST_LIMIT]
        ),
        failed_top_ups_count=failed_top_ups.count(),
        failed_top_ups=list(
            failed_top_ups.select_related("organization", "vendor_account").order_by("-created_at")[:LIST_LIMIT]
        ),
    )


def operator_dashboard(request: HttpRequest) -> TemplateResponse:
    """The dashboard page; wrapped by ``admin_site.admin_view`` (staff only)."""
    from django.contrib import admin

    if not request.user.has_perm("billing.view_invoice"):
        raise PermissionDenied("The dashboard shows money figures: it needs the permission to view invoices.")
    context = {
        **admin.site.each_context(request),
        "title": _("Operator dashboard"),
        "figures": operator_figures(),
        "list_limit": LIST_LIMIT,
        "failed_top_up_days": FAILED_TOP_UP_DAYS,
    }
    return TemplateResponse(request, "admin/dashboard.html", context)

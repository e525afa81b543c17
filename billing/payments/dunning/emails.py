"""The emails of dunning: to the customer's billing contacts (in the invoice's language) and to the
operator when a case ends unpaid. Rendering only; the services decide when, and send after commit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from django.conf import settings
from django.core.mail import EmailMessage
from django.template.loader import render_to_string
from django.urls import NoReverseMatch, reverse
from django.utils import formats, translation
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

from aggregator.money import quantize
from aggregator.tenancy.models import User
from billing.invoicing.delivery import invoice_pay_url, money
from billing.invoicing.models import Invoice
from billing.payments.gateways.base import HARD_DECLINE_CODES

# What the customer reads about a decline, in their language. The gateway's own messages
# (``decline_message``) are English; these cover the same cases in short.
_REASONS: dict[str, Promise] = {
    "insufficient_funds": _("the card has insufficient funds."),
    "expired_card": _("the card has expired."),
    "card_velocity_exceeded": _("the card has reached its spending limit for now."),
    "processing_error": _("the bank or the payment provider had a temporary error."),
    "temporary_failure": _("the bank or the payment provider had a temporary error."),
    "stripe_unavailable": _("the bank or the payment provider had a temporary error."),
}
_HARD_REASON = _("the bank refused the card, so it cannot be charged again.")
_GENERIC_REASON = _("the bank declined the payment.")


def decline_reason(code: str) -> str:
    """A short, translated reason for a decline code (for the active language)."""
    if code in _REASONS:
        return str(_REASONS[code])
    if code in HARD_DECLINE_CODES:
        return str(_HARD_REASON)
    return str(_GENERIC_REASON)


@dataclass(frozen=True)
class CustomerNotice:
    """What a customer email says. ``kind``: reminder, declined, hard_declined, needs_action."""

    kind: str
    final: bool  # no further step: the next thing is the write-off at ``end_at``
    next_at: datetime | None
    end_at: datetime
    method_label: str = ""
    decline_code: str = ""
    action_url: str = ""


def _day(value: date | None) -> str:
    return formats.date_format(value, "DATE_FORMAT") if value else ""


def _amount_left(invoice: Invoice) -> str:
    left = quantize(invoice.balance_due, invoice.currency, rounding="ROUND_HALF_UP")
    return money(left, invoice.currency)


def _portal_url() -> str:
    try:
        return f"{settings.SITE_URL}{reverse('portal:dashboard')}"
    except NoReverseMatch:
        return f"{settings.SITE_URL}/"


def customer_email(*, invoice: Invoice, notice: CustomerNotice, recipients: list[str]) -> EmailMessage:
    """The email to the billing contacts, in the invoice's language."""
    customer = invoice.customer or {}
    issuer = invoice.issuer_snapshot or {}
    with translation.override(invoice.locale or settings.LANGUAGE_CODE):
        context = {
            "kind": notice.kind,
            "final": notice.final,
            "customer_name": customer.get("name") or invoice.organization.legal_name or invoice.organization.name,
            "number": invoice.number or str(invoice.pk),
            "amount": _amount_left(invoice),
            "due_date": _day(invoice.due_date),
            "next_date": _day(notice.next_at),
            "end_date": _day(notice.end_at),
            "method": notice.method_label,
            "reason": decline_reason(notice.decline_code),
            "action_url": notice.action_url,
            "pay_url": invoice_pay_url(invoice),
            "portal_url": _portal_url(),
            "issuer_name": issuer.get("name") or invoice.issuer.name,
        }
        subject = " ".join(render_to_string("emails/dunning_customer_subject.txt", context).split())
        body = render_to_string("emails/dunning_customer.txt", context)
    reply_to = [issuer["email"]] if issuer.get("email") else None
    return EmailMessage(subject, body, settings.DEFAULT_FROM_EMAIL, to=recipients, reply_to=reply_to)


def operator_recipients() -> list[str]:
    """``OPERATOR_EMAIL`` (comma-separated), else every active staff user."""
    configured = [a.strip() for a in str(getattr(settings, "OPERATOR_EMAIL", "") or "").split(",") if a.strip()]
    if configured:
        return configured
    return sorted(User.objects.filter(is_staff=True, is_active=True).values_list("email", flat=True))


def operator_email(
    *, invoice: Invoice, steps_done: int, last_failure: str, written_off: bool, recipients: list[str]
) -> EmailMessage:
    """Tell the operator that dunning of ``invoice`` ended unpaid (in the site's language)."""
    with translation.override(settings.LANGUAGE_CODE):
        context = {
            "number": invoice.number or str(invoice.pk),
            "organization": invoice.organization.name,
            "organization_slug": invoice.organization.slug,
            "amount": _amount_left(invoice),
            "due_date": _day(invoice.due_date),
            "steps": steps_done,
            "last_failure": last_failure,
            "written_off": written_off,
            "admin_url": f"{settings.SITE_URL}/admin/billing/invoice/{invoice.pk}/change/",
        }
        subject = " ".join(render_to_string("emails/dunning_operator_subject.txt", context).split())
        body = render_to_string("emails/dunning_operator.txt", context)
    return EmailMessage(subject, body, settings.DEFAULT_FROM_EMAIL, to=recipients)

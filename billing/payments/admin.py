"""Operator console: card payments and the gateway events behind them.

Money moves only through services and verified events, so both are read-only here. Finance may
refund a payment (from its page) and process stored events again (e.g. after fixing the cause of
a failure); both leave an audit row.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.utils.translation import gettext_lazy as _
from unfold.decorators import action
from unfold.widgets import UnfoldAdminDecimalFieldWidget, UnfoldAdminTextInputWidget

from aggregator.tenancy.admin_base import (
    ReadOnlyModelAdmin,
    action_page,
    admin_audit,
    change_page,
    require_permission,
)
from billing.invoicing.delivery import money
from billing.payments import services
from billing.payments.gateways.base import PaymentError
from billing.payments.records import Payment, WebhookEvent
from billing.payments.tasks import webhook_event_process_task

REFUND = "billing.refund_payment"
REPROCESS = "billing.change_webhookevent"


class RefundForm(forms.Form):
    amount = forms.DecimalField(
        required=False,
        min_value=Decimal("0.01"),
        decimal_places=10,
        widget=UnfoldAdminDecimalFieldWidget,
        help_text=_("Leave empty to refund everything not refunded yet."),
    )
    reason = forms.CharField(max_length=300, required=False, widget=UnfoldAdminTextInputWidget)


@admin.register(Payment)
class PaymentAdmin(ReadOnlyModelAdmin):
    list_display = ["idempotency_key", "organization", "invoice", "top_up", "amount", "currency", "status",
                    "failure_code", "wallet", "created_at"]  # fmt: skip
    list_filter = ["status", "gateway", "currency", "wallet", "payment_method_type"]
    search_fields = ["idempotency_key", "gateway_reference", "charge_reference", "organization__slug",
                     "invoice__number"]  # fmt: skip
    list_select_related = ["organization", "invoice", "top_up"]
    date_hierarchy = "created_at"
    actions_detail = ["refund_detail"]

    def has_refund_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.has_perm(REFUND))

    @action(description=_("Refund"), url_path="refund", permissions=["refund"])
    def refund_detail(self, request: HttpRequest, object_id: str) -> HttpResponse:
        payment = self.get_object(request, object_id)
        if payment is None:
            raise Http404("No such payment.")
        form = RefundForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            require_permission(request, REFUND)
            before = {"status": payment.status, "amount_refunded": payment.amount_refunded}
            try:
                refunded = services.payment_refund(
                    payment_id=payment.pk, amount=form.cleaned_data["amount"], reason=form.cleaned_data["reason"]
                )
            except (services.PaymentNotRefundable, PaymentError) as exc:
                form.add_error(None, str(exc))
            else:
                admin_audit(
                    request,
                    action="payment.refund",
                    obj=refunded,
                    before=before,
                    after={
                        "status": refunded.status,
                        "amount_refunded": refunded.amount_refunded,
                        "reason": form.cleaned_data["reason"],
                    },
                )
                self.message_user(
                    request,
                    f"Refunded; {money(refunded.amount_refunded, refunded.currency)} of "
                    f"{money(refunded.amount, refunded.currency)} is refunded now. "
                    "Issue a credit note on the invoice if the customer is owed one.",
                    messages.SUCCESS,
                )
                return change_page(payment)
        return action_page(
            request,
            self,
            payment,
            title=str(_("Refund")),
            description=str(_("Refunds at the gateway (to the card or wallet that paid)."))
            + f" {money(payment.amount - payment.amount_refunded, payment.currency)} can be refunded.",
            form=form,
        )


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyModelAdmin):
    list_display = ["event_id", "gateway", "type", "status", "attempts", "received_at", "processed_at"]
    list_filter = ["status", "gateway", "type"]
    search_fields = ["event_id", "type"]
    date_hierarchy = "received_at"
    actions = ["process_again"]

    @admin.action(
        description=_("Process the selected events again (failed or unprocessed ones)"), permissions=["process"]
    )
    def process_again(self, request: HttpRequest, queryset: QuerySet[WebhookEvent]) -> None:
        require_permission(request, REPROCESS)
        pending = list(queryset.exclude(status__in=[WebhookEvent.Status.PROCESSED, WebhookEvent.Status.IGNORED]))
        for event in pending:
            admin_audit(
                request,
                action="webhook_event.reprocess",
                obj=event,
                before={"status": event.status, "attempts": event.attempts, "error": event.error},
                after={"queued": True},
            )
            webhook_event_process_task.delay_on_commit(event.pk)
        skipped = len(queryset) - len(pending)
        note = f" {skipped} were processed already and are left alone." if skipped else ""
        self.message_user(request, f"Queued {len(pending)} event(s) for processing.{note}", messages.SUCCESS)

    def has_process_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm(REPROCESS))

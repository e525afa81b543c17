"""Portal: prepaid credits. The ledger history of each vendor account, recording a purchase or a
grant (the same service as the API), automatic top-up rules with a preview of how often they would
top up, and the top-ups made, with every decline reason."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Q, Sum
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from aggregator.portal.access import PortalView
from aggregator.portal.selectors import vendor_runways
from aggregator.tenancy.models import Organization
from aggregator.tenancy.scoping import OrganizationScopedMixin, scoped
from billing.ledger import selectors as ledger_selectors
from billing.ledger import services as ledger_services
from billing.ledger.models import CreditPurchase, LedgerAccount, LedgerEntry
from billing.payments.models import PaymentMethod
from billing.topups import selectors as topup_selectors
from billing.topups import services as topup_services
from billing.topups.models import TargetKind, TopUp, TopUpRule
from providers.models import VendorAccount

LEDGER_PAGE_SIZE = 50
HISTORY_SIZE = 30


def _amount_field(label: Any, *, required: bool = False, help_text: Any = "") -> forms.DecimalField:
    return forms.DecimalField(
        label=label,
        required=required,
        min_value=Decimal(0),
        max_digits=28,
        decimal_places=10,
        help_text=help_text,
        widget=forms.NumberInput(attrs={"step": "any", "inputmode": "decimal"}),
    )


class PurchaseForm(forms.Form):
    vendor_account = forms.ModelChoiceField(queryset=VendorAccount.objects.none(), label=gettext_lazy("Account"))
    kind = forms.ChoiceField(choices=CreditPurchase.Kind.choices, label=gettext_lazy("Kind"))
    amount = _amount_field(gettext_lazy("Amount"), required=True)
    currency = forms.CharField(
        label=gettext_lazy("Currency"),
        max_length=3,
        help_text=gettext_lazy("The currency the vendor charged, e.g. USD."),
    )
    effective_at = forms.DateTimeField(
        label=gettext_lazy("Bought or granted at (UTC)"),
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    expires_at = forms.DateTimeField(
        label=gettext_lazy("Expires at (UTC, optional)"),
        required=False,
        help_text=gettext_lazy("Many vendors let prepaid credits expire after a year: unused credits then lapse."),
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    note = forms.CharField(label=gettext_lazy("Note (optional)"), max_length=200, required=False)
    # A fresh key per displayed form: submitting the same form twice records one purchase.
    request_key = forms.CharField(widget=forms.HiddenInput, max_length=64)

    def __init__(self, *args: Any, organization: Organization, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["vendor_account"]
        assert isinstance(field, forms.ModelChoiceField)
        field.queryset = scoped(VendorAccount, organization).order_by("vendor", "label")
        field.error_messages["invalid_choice"] = _("Choose one of your organization's vendor accounts.")

    def clean_currency(self) -> str:
        return str(self.cleaned_data["currency"]).strip().upper()

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        start, end = data.get("effective_at"), data.get("expires_at")
        if start and end and end <= start:
            self.add_error("expires_at", _("The expiry must be after the purchase."))
        return data


class TopUpRuleForm(forms.Form):
    target_kind = forms.ChoiceField(choices=TargetKind.choices, label=gettext_lazy("Top up"))
    vendor_account = forms.ModelChoiceField(
        queryset=VendorAccount.objects.none(), required=False, label=gettext_lazy("Vendor account")
    )
    trigger = forms.ChoiceField(choices=TopUpRule.Trigger.choices, label=gettext_lazy("Top up when"))
    threshold_amount = _amount_field(
        gettext_lazy("Balance below"), help_text=gettext_lazy("For “balance below”: an amount, e.g. 100.00.")
    )
    threshold_days = forms.DecimalField(
        label=gettext_lazy("Runway below (days)"),
        required=False,
        min_value=Decimal(0),
        max_digits=6,
        decimal_places=1,
        help_text=gettext_lazy("For “runway below”: days of credits left, e.g. 7."),
    )
    method = forms.ChoiceField(choices=TopUpRule.Method.choices, label=gettext_lazy("Top-up amount"))
    amount = _amount_field(gettext_lazy("Fixed amount"), help_text=gettext_lazy("For a fixed amount, e.g. 500.00."))
    target_balance = _amount_field(
        gettext_lazy("Target balance"), help_text=gettext_lazy("For “up to a target balance”, e.g. 1000.00.")
    )
    minimum_amount = _amount_field(gettext_lazy("Minimum top-up"))
    maximum_amount = _amount_field(gettext_lazy("Maximum top-up"), help_text=gettext_lazy("Empty: no maximum."))
    monthly_cap = _amount_field(
        gettext_lazy("Monthly cap"), help_text=gettext_lazy("The most charged per calendar month. Empty: no cap.")
    )
    primary_method = forms.ModelChoiceField(queryset=PaymentMethod.objects.none(), label=gettext_lazy("Pay with"))
    fallback_method = forms.ModelChoiceField(
        queryset=PaymentMethod.objects.none(),
        required=False,
        label=gettext_lazy("If declined, pay with (optional)"),
    )
    enabled = forms.BooleanField(required=False, initial=True, label=gettext_lazy("Enabled"))

    FIELDS = (
        "target_kind", "vendor_account", "trigger", "threshold_amount", "threshold_days", "method", "amount",
        "target_balance", "minimum_amount", "maximum_amount", "monthly_cap", "primary_method", "fallback_method",
        "enabled",
    )  # fmt: skip

    def __init__(self, *args: Any, organization: Organization, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.organization = organization
        for name, model in (("vendor_account", VendorAccount), ("primary_method", PaymentMethod),
                            ("fallback_method", PaymentMethod)):  # fmt: skip
            field = self.fields[name]
            assert isinstance(field, forms.ModelChoiceField)
            field.queryset = scoped(model, organization)
            field.error_messages["invalid_choice"] = _("Choose one of your organization's.")

    def rule_data(self) -> topup_services.TopUpRuleData:
        data: dict[str, Any] = {name: self.cleaned_data.get(name) for name in self.FIELDS}
        if data["minimum_amount"] is None:
            data["minimum_amount"] = Decimal(0)
        if data["target_kind"] == TargetKind.WALLET:
            data["vendor_account"] = None
        return data  # type: ignore[return-value]

    def add_service_errors(self, errors: dict[str, str]) -> None:
        for name, message in errors.items():
            field = name if name in self.fields else None
            label = self.fields[name].label if field else name
            self.add_error(field, f"{label}: {message}" if field is None else message)


def rule_preview(*, rule: TopUpRule, today: date, burn: Decimal | None = None) -> str:
    """How often the rule would top up at the current burn rate (``burn``, read from the ledger when
    not given), in a sentence in the page's language (the figures of
    ``billing.topups.selectors.top_up_rule_preview``)."""
    if burn is None:
        burn = topup_selectors.target_runway(rule=rule, today=today).burn_rate_per_day
    if burn <= 0:
        return _("Nothing is being spent at the moment, so this rule would not top up.")
    if rule.trigger == TopUpRule.Trigger.BALANCE_BELOW:
        trigger_balance = Decimal(rule.threshold_amount or 0)
    else:
        trigger_balance = burn * Decimal(rule.threshold_days or 0)
    size = topup_selectors.planned_amount(rule=rule, balance=trigger_balance)
    rate = topup_selectors.money_text(burn, rule.currency)
    if size <= 0:
        return _(
            "At the current burn rate of %(rate)s a day this rule would not top up: its target balance is not "
            "above the threshold."
        ) % {"rate": rate}
    days = (size / burn).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    values = {"rate": rate, "amount": topup_selectors.money_text(size, rule.currency), "days": days}
    if days < 1:
        text = _("At the current burn rate of %(rate)s a day this tops up %(amount)s more than once a day.") % values
    else:
        text = _("At the current burn rate of %(rate)s a day this tops up %(amount)s about every %(days)s days.") % (
            values
        )
    if rule.monthly_cap is not None and burn * 30 > rule.monthly_cap:
        text += " " + _("The monthly cap of %(cap)s runs out before the month ends.") % {
            "cap": topup_selectors.money_text(Decimal(rule.monthly_cap), rule.currency)
        }
    return text


def _unsaved_rule(organization: Organization, data: topup_services.TopUpRuleData) -> TopUpRule | None:
    """The rule the form describes, for a preview; None when it is too incomplete to preview."""
    rule = TopUpRule(organization=organization)
    for name, value in data.items():
        setattr(rule, name, value)
    if rule.target_kind == TargetKind.WALLET:
        rule.currency = organization.currency
    elif rule.vendor_account is not None:
        rule.currency = ledger_selectors.vendor_account_runway(
            vendor_account=rule.vendor_account, today=timezone.now().date()
        ).currency
    else:
        return None
    trigger_ok = rule.threshold_amount if rule.trigger == TopUpRule.Trigger.BALANCE_BELOW else rule.threshold_days
    method_ok = rule.amount if rule.method == TopUpRule.Method.FIXED else rule.target_balance
    return rule if trigger_ok and method_ok else None


def payment_methods_url() -> str | None:
    try:
        return reverse("portal:payment-methods")
    except NoReverseMatch:
        return None


class CreditsView(PortalView):
    """The credits page; ``?account=<id>`` selects the vendor account whose ledger is shown."""

    def get(self, request: HttpRequest) -> HttpResponse:
        return self.page(request)

    def page(
        self,
        request: HttpRequest,
        *,
        purchase_form: PurchaseForm | None = None,
        account_id: int | None = None,
        status: int = 200,
    ) -> HttpResponse:
        today = timezone.now().date()
        accounts = list(scoped(VendorAccount, self.organization).order_by("vendor", "label"))
        wanted = account_id or _int(request.GET.get("account"))
        selected = next((a for a in accounts if a.pk == wanted), None if wanted else accounts[0] if accounts else None)
        if wanted and selected is None:
            raise Http404(_("No such vendor account in your organization."))
        context: dict[str, Any] = {"accounts": accounts, "selected": selected}
        if selected is not None:
            runway = ledger_selectors.vendor_account_runway(vendor_account=selected, today=today)
            context.update(runway=runway, **self._ledger(request, selected))
            context["purchases"] = list(selected.purchases.order_by("-effective_at", "-id")[:HISTORY_SIZE])
            if purchase_form is None:
                purchase_form = PurchaseForm(
                    organization=self.organization,
                    initial={
                        "vendor_account": selected.pk,
                        "kind": CreditPurchase.Kind.PURCHASE,
                        "currency": runway.currency,
                        "effective_at": timezone.now().replace(second=0, microsecond=0),
                        "request_key": uuid.uuid4().hex,
                    },
                )
        rules = list(
            scoped(TopUpRule, self.organization)
            .select_related("organization", "vendor_account", "primary_method", "fallback_method")
            .order_by("created_at", "id")
        )
        runways = vendor_runways(organization=self.organization, today=today)
        for rule in rules:
            known = runways.get(rule.vendor_account_id) if rule.vendor_account_id else None
            burn = known.burn_rate_per_day if known and known.currency == rule.currency else None
            rule.preview = rule_preview(rule=rule, today=today, burn=burn)  # type: ignore[attr-defined]
        top_ups = list(
            scoped(TopUp, self.organization)
            .select_related("vendor_account")
            .prefetch_related("attempts")
            .order_by("-created_at", "-id")[:HISTORY_SIZE]
        )
        context.update(
            purchase_form=purchase_form,
            rules=rules,
            top_ups=top_ups,
            payment_methods_url=payment_methods_url(),
        )
        return render(request, "portal/credits/credits.html", self.base_context(**context), status=status)

    def _ledger(self, request: HttpRequest, account: VendorAccount) -> dict[str, Any]:
        """One page of the account's prepaid-credit entries, newest first, with the balance after each."""
        ledgers = {
            a.pk: a for a in LedgerAccount.objects.filter(vendor_account=account, key__startswith="vendor_prepaid:")
        }
        entries = (
            LedgerEntry.objects.filter(account_id__in=list(ledgers))
            .select_related("transaction")
            .order_by("-effective_at", "-id")
        )
        page = Paginator(entries, LEDGER_PAGE_SIZE).get_page(request.GET.get("page"))
        rows = list(page.object_list)
        # Balance after each row: the current balance less everything posted after it.
        later: dict[int, Decimal] = {}
        if rows:
            first = rows[0]
            newer = LedgerEntry.objects.filter(account_id__in=list(ledgers)).filter(
                Q(effective_at__gt=first.effective_at) | Q(effective_at=first.effective_at, id__gt=first.pk)
            )
            later = {
                r["account_id"]: Decimal(r["total"]) for r in newer.values("account_id").annotate(total=Sum("amount"))
            }
        running = {pk: Decimal(a.balance) - later.get(pk, Decimal(0)) for pk, a in ledgers.items()}
        history = []
        for entry in rows:
            history.append({"entry": entry, "balance_after": running[entry.account_id]})
            running[entry.account_id] -= Decimal(entry.amount)
        return {"ledger_page": page, "ledger_rows": history}


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


class PurchaseCreateView(CreditsView):
    """Record credits bought or granted at a vendor (``credit_purchase_record``, as the API)."""

    def post(self, request: HttpRequest) -> HttpResponse:
        form = PurchaseForm(request.POST, organization=self.organization)
        if not form.is_valid():
            account = _int(request.POST.get("vendor_account"))
            own = account is not None and scoped(VendorAccount, self.organization).filter(pk=account).exists()
            return self.page(request, purchase_form=form, account_id=account if own else None, status=400)
        data = form.cleaned_data
        account = data["vendor_account"]
        try:
            purchase = ledger_services.credit_purchase_record(
                vendor_account=account,
                amount=data["amount"],
                currency=data["currency"],
                kind=data["kind"],
                effective_at=data["effective_at"],
                expires_at=data.get("expires_at"),
                note=data.get("note") or "",
                client_key=f"portal:{data['request_key']}",
                actor=self.user,
            )
        except ledger_services.LedgerInputError as exc:
            form.add_error(None, str(exc))
            return self.page(request, purchase_form=form, account_id=account.pk, status=400)
        messages.success(
            request,
            _("Recorded %(kind)s of %(amount)s for %(label)s.")
            % {
                "kind": purchase.get_kind_display().lower(),
                "amount": topup_selectors.money_text(purchase.amount, purchase.currency),
                "label": account.label,
            },
        )
        return HttpResponseRedirect(f"{reverse('portal:credits')}?account={account.pk}")


class TopUpRuleFormView(PortalView):
    template_name = "portal/credits/rule_form.html"

    def render_form(
        self, request: HttpRequest, form: TopUpRuleForm, *, rule: TopUpRule | None, preview: str | None, status: int
    ) -> HttpResponse:
        methods = scoped(PaymentMethod, self.organization).exists()
        return render(
            request,
            self.template_name,
            self.base_context(
                form=form,
                rule=rule,
                preview=preview,
                has_payment_methods=methods,
                payment_methods_url=payment_methods_url(),
            ),
            status=status,
        )

    def handle(self, request: HttpRequest, rule: TopUpRule | None) -> HttpResponse:
        form = TopUpRuleForm(request.POST, organization=self.organization)
        if not form.is_valid():
            return self.render_form(request, form, rule=rule, preview=None, status=400)
        data = form.rule_data()
        if "preview" in request.POST:
            unsaved = _unsaved_rule(self.organization, data)
            text = (
                rule_preview(rule=unsaved, today=timezone.now().date())
                if unsaved
                else _("Fill in the trigger and the amount to see a preview.")
            )
            return self.render_form(request, form, rule=rule, preview=text, status=200)
        try:
            if rule is None:
                saved = topup_services.top_up_rule_create(organization=self.organization, data=data, actor=self.user)
            else:
                saved = topup_services.top_up_rule_update(rule=rule, data=data, actor=self.user)
        except topup_services.TopUpRuleInvalid as exc:
            form.add_service_errors(exc.errors)
            return self.render_form(request, form, rule=rule, preview=None, status=400)
        messages.success(request, _("The top-up rule was saved. %(preview)s") % {
            "preview": rule_preview(rule=saved, today=timezone.now().date())
        })  # fmt: skip
        return HttpResponseRedirect(reverse("portal:credits") + "#top-up-rules")


class TopUpRuleCreateView(TopUpRuleFormView):
    def get(self, request: HttpRequest) -> HttpResponse:
        initial: dict[str, Any] = {"target_kind": TargetKind.VENDOR_ACCOUNT, "enabled": True}
        account = _int(request.GET.get("account"))
        if account:
            initial["vendor_account"] = account
        default = scoped(PaymentMethod, self.organization).filter(is_default=True).first()
        if default:
            initial["primary_method"] = default.pk
        form = TopUpRuleForm(organization=self.organization, initial=initial)
        return self.render_form(request, form, rule=None, preview=None, status=200)

    def post(self, request: HttpRequest) -> HttpResponse:
        return self.handle(request, None)


class ScopedRuleView(OrganizationScopedMixin, TopUpRuleFormView):
    scoped_model = TopUpRule

    def get_object(self, pk: int) -> TopUpRule:
        rule = self.get_queryset().select_related("organization", "vendor_account").filter(pk=pk).first()
        if rule is None:
            raise Http404(_("No such top-up rule in your organization."))
        return rule


class TopUpRuleEditView(ScopedRuleView):
    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        rule = self.get_object(pk)
        initial = {name: getattr(rule, name) for name in TopUpRuleForm.FIELDS}
        form = TopUpRuleForm(organization=self.organization, initial=initial)
        preview = rule_preview(rule=rule, today=timezone.now().date())
        return self.render_form(request, form, rule=rule, preview=preview, status=200)

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        return self.handle(request, self.get_object(pk))


class TopUpRuleToggleView(ScopedRuleView):
    """Disable a rule (its waiting top-ups are canceled), or enable it again."""

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        rule = self.get_object(pk)
        data: topup_services.TopUpRuleData = {"enabled": not rule.enabled}
        try:
            topup_services.top_up_rule_update(rule=rule, data=data, actor=self.user)
        except topup_services.TopUpRuleInvalid as exc:
            messages.error(request, " ".join(f"{k}: {v}" for k, v in exc.errors.items()))
        else:
            messages.success(request, _("The top-up rule is on.") if data["enabled"] else _("The top-up rule is off."))
        return HttpResponseRedirect(reverse("portal:credits") + "#top-up-rules")

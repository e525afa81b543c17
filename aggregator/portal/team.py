"""Portal: the team (members, roles, invitations) and the organization's billing profile."""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views import View
from stdnum import get_cc_module
from stdnum.eu import vat as eu_vat

from aggregator.portal.access import PortalView
from aggregator.tenancy import invitations
from aggregator.tenancy.context import SESSION_KEY
from aggregator.tenancy.models import Invitation, Membership, Organization, Role, User, country_validator
from aggregator.tenancy.scoping import OrganizationScopedMixin, scoped
from aggregator.tenancy.services import TenancyError, audit_record, membership_remove, membership_update_role
from billing.invoicing.tax import EU_VAT_RATES, vat_id_is_valid

JP_REGISTRATION = re.compile(r"^T\d{13}$")
PROFILE_FIELDS = ("legal_name", "address", "country", "tax_id", "billing_email", "locale")


def tax_id_problem(*, country: str, tax_id: str) -> str | None:
    """Why ``tax_id`` is not a well-formed tax id of ``country`` (None when it is, or when empty)."""
    if not tax_id:
        return None
    if country in EU_VAT_RATES:
        prefix = "EL" if country == "GR" else country
        if not tax_id.startswith(prefix):
            return _("An EU VAT id starts with its country prefix: %(prefix)s followed by the number.") % {
                "prefix": prefix
            }
        if not vat_id_is_valid(tax_id):
            return _("%(id)s is not a valid %(country)s VAT id: check the digits (format and check digit).") % {
                "id": tax_id,
                "country": country,
            }
        return None
    if country == "JP":
        if not JP_REGISTRATION.match(tax_id):
            return _("A Japanese invoice registration number is T followed by 13 digits, e.g. T1234567890123.")
        return None
    module = get_cc_module(country.lower(), "vat") if country else None
    if module is not None and not module.is_valid(tax_id):
        return _("%(id)s is not a valid tax id for %(country)s: check its format.") % {
            "id": tax_id,
            "country": country,
        }
    return None


class BillingProfileForm(forms.ModelForm):
    class Meta:
        model = Organization
        fields = list(PROFILE_FIELDS)
        labels = {
            "legal_name": gettext_lazy("Legal name"),
            "address": gettext_lazy("Address"),
            "country": gettext_lazy("Country"),
            "tax_id": gettext_lazy("Tax id"),
            "billing_email": gettext_lazy("Billing email"),
            "locale": gettext_lazy("Invoice and email language"),
        }
        help_texts = {
            "address": gettext_lazy("Postal address as it appears on invoices, one line per row."),
            "country": gettext_lazy("Two-letter ISO code, e.g. DE, JP, US."),
            "tax_id": gettext_lazy(
                "EU: VAT id with country prefix (DE123456789). Japan: registration number T + 13 digits."
            ),
            "billing_email": gettext_lazy("Invoices and payment notices go here as well as to owners."),
        }
        widgets = {"address": forms.Textarea(attrs={"rows": 4})}

    def clean_country(self) -> str:
        country = (self.cleaned_data.get("country") or "").strip().upper()
        if country:
            country_validator(country)
        return country

    def clean_tax_id(self) -> str:
        value = self.cleaned_data.get("tax_id") or ""
        return re.sub(r"[\s.\-]", "", value).upper()

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        country, tax_id = data.get("country") or "", data.get("tax_id") or ""
        if tax_id and not country:
            self.add_error("country", _("Give the country of the tax id."))
        elif "country" not in self.errors:
            problem = tax_id_problem(country=country, tax_id=tax_id)
            if problem:
                self.add_error("tax_id", problem)
        if country in EU_VAT_RATES and tax_id and "tax_id" not in self.errors:
            data["tax_id"] = eu_vat.compact(tax_id)
        return data


CURRENCY_LOCKED = gettext_lazy("The invoice currency cannot change after the first invoice or ledger entry: ask us.")


def currency_is_locked(organization: Organization) -> bool:
    """The invoice currency is the currency of the organization's balances and receivables: it can
    change only until the first ledger transaction or invoice."""
    from billing.invoicing.models import Invoice
    from billing.ledger.models import LedgerTransaction

    return (
        LedgerTransaction.objects.filter(organization=organization).exists()
        or Invoice.objects.filter(organization=organization).exists()
    )


class CurrencyForm(forms.Form):
    currency = forms.CharField(
        label=gettext_lazy("Invoice currency"),
        max_length=3,
        help_text=gettext_lazy("ISO 4217 code, e.g. USD, EUR, JPY. It can change until the first invoice."),
    )

    def clean_currency(self) -> str:
        from aggregator.money import CurrencyError, currency_code, minor_units

        try:
            code = currency_code(self.cleaned_data["currency"])
            minor_units(code)
        except (CurrencyError, KeyError, ValueError):
            raise forms.ValidationError(_("Use a three-letter ISO 4217 currency code, e.g. USD, EUR or JPY.")) from None
        return code


class BillingProfileView(PortalView):
    """Address, tax id, billing email and language of invoices. The invoice currency and billing mode
    change how money is recorded, so the operator sets them."""

    def get(self, request: HttpRequest) -> HttpResponse:
        return self._render(request, BillingProfileForm(instance=self.organization), None, 200)

    def _currency_form(self, data: Any = None) -> CurrencyForm | None:
        if currency_is_locked(self.organization):
            return None
        return CurrencyForm(data, initial={"currency": self.organization.currency})

    def _render(
        self, request: HttpRequest, form: BillingProfileForm, currency_form: CurrencyForm | None, status: int
    ) -> HttpResponse:
        if currency_form is None and request.method == "GET":
            currency_form = self._currency_form()
        context = self.base_context(form=form, currency_form=currency_form)
        return render(request, "portal/team/billing_profile.html", context, status=status)

    def post(self, request: HttpRequest) -> HttpResponse:
        organization = Organization.objects.get(pk=self.organization.pk)
        fields: tuple[str, ...] = PROFILE_FIELDS
        before = {name: getattr(organization, name) for name in (*fields, "currency")}
        form = BillingProfileForm(request.POST, instance=organization)
        currency_form = self._currency_form(request.POST) if "currency" in request.POST else None
        if "currency" in request.POST and currency_form is None:
            form.is_valid()
            form.add_error(None, CURRENCY_LOCKED)
            return self._render(request, form, None, 400)
        valid = form.is_valid()
        if currency_form is not None and not currency_form.is_valid():
            valid = False
        if not valid:
            return self._render(request, form, currency_form, 400)
        with transaction.atomic():
            if currency_form is not None:
                if currency_is_locked(organization):  # money moved meanwhile
                    form.add_error(None, CURRENCY_LOCKED)
                    return self._render(request, form, None, 400)
                organization.currency = currency_form.cleaned_data["currency"]
                fields = (*fields, "currency")
            form.save()
            changed = [name for name in fields if before[name] != getattr(organization, name)]
            if changed:
                audit_record(
                    action="organization.update",
                    organization=organization,
                    actor=self.user,
                    obj=organization,
                    before={name: before[name] for name in changed},
                    after={name: getattr(organization, name) for name in changed},
                )
        messages.success(request, _("The billing profile was saved."))
        return HttpResponseRedirect(reverse("portal:billing-profile"))


class InviteForm(forms.Form):
    email = forms.EmailField(label=gettext_lazy("Email"))
    role = forms.ChoiceField(label=gettext_lazy("Role"), choices=Role.choices, initial=Role.VIEWER)


class TeamView(PortalView):
    """Members and their roles, and pending invitations. Owners change them."""

    write_role = Role.OWNER

    def get(self, request: HttpRequest) -> HttpResponse:
        return self.page(request, InviteForm(), 200)

    def page(self, request: HttpRequest, form: InviteForm, status: int) -> HttpResponse:
        members = list(scoped(Membership, self.organization).select_related("user").order_by("created_at", "id"))
        pending = list(
            scoped(Invitation, self.organization)
            .filter(accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=timezone.now())
            .select_related("invited_by")
            .order_by("-created_at")
        )
        return render(
            request,
            "portal/team/team.html",
            self.base_context(
                members=members,
                invitations=pending,
                invite_form=form,
                roles=Role.choices,
                role_help=[
                    (Role.OWNER.label, _("Everything, including members and roles.")),
                    (
                        Role.BILLING_ADMIN.label,
                        _("Vendor accounts, credits, top-up rules, payment methods and the billing profile."),
                    ),
                    (Role.VIEWER.label, _("Sees everything, changes nothing.")),
                ],
            ),
            status=status,
        )


class InviteView(TeamView):
    def post(self, request: HttpRequest) -> HttpResponse:
        form = InviteForm(request.POST)
        if not form.is_valid():
            return self.page(request, form, 400)
        try:
            invitation = invitations.invitation_create(
                organization=self.organization,
                email=form.cleaned_data["email"],
                role=form.cleaned_data["role"],
                invited_by=self.user,
            )
        except TenancyError as exc:
            form.add_error("email", str(exc))
            return self.page(request, form, 400)
        messages.success(request, _("Invitation sent to %(email)s.") % {"email": invitation.email})
        return HttpResponseRedirect(reverse("portal:team"))


class InvitationRevokeView(TeamView):
    def post(self, request: HttpRequest) -> HttpResponse:
        pk = request.POST.get("invitation", "")
        invitation = scoped(Invitation, self.organization).filter(pk=int(pk) if pk.isdigit() else 0).first()
        if invitation is None:
            raise Http404(_("No such invitation in your organization."))
        invitations.invitation_revoke(invitation=invitation, actor=self.user)
        messages.success(request, _("The invitation of %(email)s is revoked.") % {"email": invitation.email})
        return HttpResponseRedirect(reverse("portal:team"))


class ScopedMemberView(OrganizationScopedMixin, PortalView):
    scoped_model = Membership
    write_role = Role.OWNER

    def get_object(self, pk: int) -> Membership:
        membership = self.get_queryset().select_related("user", "organization").filter(pk=pk).first()
        if membership is None:
            raise Http404(_("No such member in your organization."))
        return membership


class MemberRoleView(ScopedMemberView):
    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        membership = self.get_object(pk)
        role = request.POST.get("role", "")
        if role not in Role.values:
            messages.error(request, _("Choose a role: owner, billing admin or viewer."))
        else:
            try:
                membership_update_role(membership=membership, role=role, actor=self.user)
            except TenancyError as exc:
                messages.error(request, str(exc))
            else:
                messages.success(
                    request,
                    _("%(email)s is now %(role)s.") % {"email": membership.user.email, "role": Role(role).label},
                )
        return HttpResponseRedirect(reverse("portal:team"))


class MemberRemoveView(ScopedMemberView):
    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        membership = self.get_object(pk)
        try:
            membership_remove(membership=membership, actor=self.user)
        except TenancyError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, _("%(email)s was removed.") % {"email": membership.user.email})
        return HttpResponseRedirect(reverse("portal:team"))


class NewAccountForm(forms.Form):
    full_name = forms.CharField(label=gettext_lazy("Your name"), max_length=200, required=False)
    password1 = forms.CharField(
        label=gettext_lazy("Password"), strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "new-password"})
    )
    password2 = forms.CharField(
        label=gettext_lazy("Password again"),
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def __init__(self, *args: Any, email: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.email = email

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        one, two = data.get("password1"), data.get("password2")
        if one and two and one != two:
            self.add_error("password2", _("The two passwords differ: type the same password twice."))
        elif one:
            try:
                validate_password(one, User(email=self.email, full_name=data.get("full_name") or ""))
            except ValidationError as exc:
                self.add_error("password1", exc)
        return data


class InvitationAcceptView(View):
    """The link of an invitation email: join with the signed-in account, or create one."""

    def _render(self, request: HttpRequest, invitation: Invitation | None, form: Any, status: int) -> HttpResponse:
        state = "invalid"
        if invitation is not None:
            user = request.user
            if user.is_authenticated:
                state = "accept" if user.email.lower() == invitation.email else "other_user"
            else:
                existing = User.objects.filter(email=invitation.email).first()
                state = "sign_in" if existing is not None and existing.has_usable_password() else "create"
        return render(
            request,
            "portal/team/invitation.html",
            {"invitation": invitation, "state": state, "form": form, "role": Role(invitation.role).label
             if invitation else ""},
            status=status,
        )  # fmt: skip

    def get(self, request: HttpRequest, token: str) -> HttpResponse:
        invitation = invitations.invitation_for_token(token=token)
        form = NewAccountForm(email=invitation.email) if invitation else None
        return self._render(request, invitation, form, 200 if invitation else 404)

    def post(self, request: HttpRequest, token: str) -> HttpResponse:
        invitation = invitations.invitation_for_token(token=token)
        if invitation is None:
            return self._render(request, None, None, 404)
        form = None
        try:
            if request.user.is_authenticated:
                membership = invitations.invitation_accept(token=token, user=request.user)
            else:
                form = NewAccountForm(request.POST, email=invitation.email)
                if not form.is_valid():
                    return self._render(request, invitation, form, 400)
                membership = invitations.invitation_accept(token=token, password=form.cleaned_data["password1"])
                if form.cleaned_data.get("full_name"):
                    User.objects.filter(pk=membership.user_id).update(full_name=form.cleaned_data["full_name"])
                login(request, membership.user, backend="django.contrib.auth.backends.ModelBackend")
        except TenancyError as exc:
            messages.error(request, str(exc))
            return self._render(request, invitation, form, 400)
        request.session[SESSION_KEY] = membership.organization_id
        messages.success(request, _("Welcome to %(name)s.") % {"name": membership.organization.name})
        return HttpResponseRedirect(reverse("portal:dashboard"))

"""Portal: linked vendor accounts. Link one with a guided form per vendor, test the connection,
sync now, see the sync history, change or disconnect it. Credentials are write-only: pages show
the masks the service stored (``sk-admin-…def``), forms never render a secret back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import messages
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django_stubs_ext import StrPromise

from aggregator.portal.access import PortalView
from aggregator.tenancy.scoping import OrganizationScopedMixin, scoped
from providers import services
from providers.connectors.base import CredentialField, connector_classes
from providers.models import SyncRun, VendorAccount

SYNC_HISTORY_SIZE = 20


@dataclass(frozen=True)
class VendorGuide:
    """What a customer needs to know to link an account: which key, and where to create it."""

    key_kind: StrPromise
    where: str  # the vendor page where the key is created ("" when there is none)
    steps: tuple[StrPromise, ...]


GUIDES: dict[str, VendorGuide] = {
    "openai": VendorGuide(
        gettext_lazy("an admin key (sk-admin-…)"),
        "https://platform.openai.com/settings/organization/admin-keys",
        (
            gettext_lazy("Sign in to the OpenAI platform as an organization owner."),
            gettext_lazy("Open Settings › Organization › Admin keys and create a new admin key."),
            gettext_lazy(
                "Copy the key (it starts with sk-admin-). Project and user API keys (sk-proj-…) cannot read "
                "the organization's costs and are refused."
            ),
        ),
    ),
    "anthropic": VendorGuide(
        gettext_lazy("an Admin key (sk-ant-admin01-…)"),
        "https://console.anthropic.com/settings/admin-keys",
        (
            gettext_lazy("Sign in to the Anthropic Console as an organization admin."),
            gettext_lazy("Open Settings › Admin keys and create an Admin key."),
            gettext_lazy(
                "Copy the key (it starts with sk-ant-admin01-). Ordinary API keys cannot read the cost "
                "and usage reports and are refused."
            ),
        ),
    ),
    "azure_openai": VendorGuide(
        gettext_lazy("a service principal with the Cost Management Reader role"),
        "https://portal.azure.com/#view/Microsoft_AAD_RegisteredApps/ApplicationsListBlade",
        (
            gettext_lazy("In Microsoft Entra ID › App registrations, register an application (or pick one)."),
            gettext_lazy("Copy the Directory (tenant) ID and the Application (client) ID from its Overview page."),
            gettext_lazy(
                "Under Certificates & secrets, create a client secret and copy its Value (shown once), "
                "not its Secret ID."
            ),
            gettext_lazy(
                "On the subscription that holds your Azure OpenAI resources, open Access control (IAM) and "
                "give the application the Cost Management Reader role."
            ),
        ),
    ),
    "openrouter": VendorGuide(
        gettext_lazy("a management key (sk-or-v1-…)"),
        "https://openrouter.ai/settings/management-keys",
        (
            gettext_lazy("Sign in to OpenRouter and open Settings › Management keys."),
            gettext_lazy("Create a management key and copy it. Ordinary API keys cannot read credits or activity."),
        ),
    ),
    "deepseek": VendorGuide(
        gettext_lazy("an API key (sk-…)"),
        "https://platform.deepseek.com/api_keys",
        (
            gettext_lazy("Sign in to the DeepSeek platform and open API keys."),
            gettext_lazy(
                "Create an API key and copy it. DeepSeek reports only the account balance: it has no cost history API."
            ),
        ),
    ),
    "file_import": VendorGuide(
        gettext_lazy("no key"),
        "",
        (
            gettext_lazy(
                "For a vendor without a connector: link the account, then upload its cost CSV "
                "(see the cost import format in the documentation) through the API."
            ),
        ),
    ),
}

# Translated labels of the connectors' credential fields (the connectors keep English for the API).
FIELD_LABELS: dict[str, StrPromise] = {
    "admin_key": gettext_lazy("Admin key"),
    "management_key": gettext_lazy("Management key"),
    "api_key": gettext_lazy("API key"),
    "tenant_id": gettext_lazy("Directory (tenant) ID"),
    "client_id": gettext_lazy("Application (client) ID"),
    "client_secret": gettext_lazy("Client secret value"),
    "subscription_id": gettext_lazy("Subscription ID"),
    "token_url": gettext_lazy("Token URL (optional)"),
}


def vendor_choices() -> list[tuple[str, str]]:
    """Vendors with a guide first, in the guides' order, then any other connector."""
    classes = connector_classes()
    order = [slug for slug in GUIDES if slug in classes] + sorted(set(classes) - set(GUIDES))
    return [(slug, str(classes[slug].display_name)) for slug in order]


def _credential_field(spec: CredentialField, *, editing: bool) -> forms.Field:
    attrs = {"autocomplete": "off", "spellcheck": "false", "aria-describedby": f"help_{spec.name}"}
    widget: forms.Widget = forms.PasswordInput(attrs=attrs) if spec.secret else forms.TextInput(attrs=attrs)
    return forms.CharField(
        label=FIELD_LABELS.get(spec.name, spec.label),
        help_text=spec.help,
        # When changing an account, leaving the credentials empty keeps the saved ones.
        required=spec.required and not editing,
        strip=True,
        widget=widget,
    )


class VendorAccountForm(forms.Form):
    """Label, optional API base, and the vendor's credential fields (named as in the API)."""

    label = forms.CharField(
        label=gettext_lazy("Label"),
        max_length=120,
        help_text=gettext_lazy("How you name this account, e.g. “OpenAI production”."),
    )
    api_base = forms.URLField(
        label=gettext_lazy("API base (optional)"),
        required=False,
        assume_scheme="https",
        help_text=gettext_lazy("Only for a proxy or gateway in front of the vendor. Leave empty normally."),
    )

    def __init__(self, *args: Any, vendor: str, editing: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.vendor = vendor
        self.editing = editing
        self.specs = connector_classes()[vendor].credential_fields
        for spec in self.specs:
            self.fields[spec.name] = _credential_field(spec, editing=editing)

    def credential_fields(self) -> list[forms.BoundField]:
        return [self[spec.name] for spec in self.specs]

    def credentials(self) -> dict[str, str] | None:
        """The credential object to save; None when editing and no credential was entered."""
        values = {spec.name: self.cleaned_data.get(spec.name, "") for spec in self.specs}
        if not self.editing:
            return {k: v for k, v in values.items() if v}
        secrets_given = any(values[s.name] for s in self.specs if s.secret)
        if not secrets_given:
            return None
        return {k: v for k, v in values.items() if v}


def _with_last_run(accounts: QuerySet[VendorAccount]) -> QuerySet[VendorAccount]:
    last = SyncRun.objects.filter(vendor_account=OuterRef("pk")).order_by("-created_at", "-id")
    return accounts.annotate(
        last_run_status=Subquery(last.values("status")[:1]),
        last_run_error=Subquery(last.values("error")[:1]),
        last_run_at=Subquery(last.values("created_at")[:1]),
    )


class VendorAccountListView(PortalView):
    """All linked accounts with their status and last sync, and the vendors one can link."""

    def get(self, request: HttpRequest) -> HttpResponse:
        accounts = list(_with_last_run(scoped(VendorAccount, self.organization).order_by("vendor", "label")))
        names = dict(vendor_choices())
        for account in accounts:
            account.vendor_name = names.get(account.vendor, account.vendor)  # type: ignore[attr-defined]
            status = account.last_run_status  # type: ignore[attr-defined]
            account.last_run_label = SyncRun.Status(status).label if status else ""  # type: ignore[attr-defined]
        return render(
            request,
            "portal/accounts/list.html",
            self.base_context(
                accounts=accounts,
                vendors=[(slug, names[slug], GUIDES.get(slug)) for slug in names],
            ),
        )


class VendorAccountLinkView(PortalView):
    """The guided form of one vendor (``?vendor=openai``); without a vendor, the choice of vendors."""

    def _vendor(self, request: HttpRequest) -> str | None:
        vendor = request.GET.get("vendor") or request.POST.get("vendor") or ""
        return vendor if vendor in connector_classes() else None

    def _render(self, request: HttpRequest, vendor: str | None, form: VendorAccountForm | None) -> HttpResponse:
        names = dict(vendor_choices())
        return render(
            request,
            "portal/accounts/link.html",
            self.base_context(
                vendor=vendor,
                vendor_name=names.get(vendor or ""),
                guide=GUIDES.get(vendor or ""),
                form=form,
                vendors=[(slug, names[slug], GUIDES.get(slug)) for slug in names],
            ),
            status=200 if form is None or not form.errors else 400,
        )

    def get(self, request: HttpRequest) -> HttpResponse:
        vendor = self._vendor(request)
        form = VendorAccountForm(vendor=vendor) if vendor else None
        return self._render(request, vendor, form)

    def post(self, request: HttpRequest) -> HttpResponse:
        vendor = self._vendor(request)
        if vendor is None:
            messages.error(request, _("Choose a vendor first."))
            return HttpResponseRedirect(reverse("portal:vendor-account-link"))
        form = VendorAccountForm(request.POST, vendor=vendor)
        if not form.is_valid():
            return self._render(request, vendor, form)
        try:
            account = services.vendor_account_create(
                organization=self.organization,
                vendor=vendor,
                label=form.cleaned_data["label"],
                credentials=form.credentials(),
                api_base=form.cleaned_data.get("api_base") or "",
                actor=self.user,
            )
        except services.VendorAccountError as exc:
            form.add_error(None, str(exc))
            return self._render(request, vendor, form)
        messages.success(
            request,
            _("%(label)s is linked. Test the connection, then sync it.") % {"label": account.label},
        )
        return HttpResponseRedirect(reverse("portal:vendor-account", kwargs={"pk": account.pk}))


class ScopedAccountView(OrganizationScopedMixin, PortalView):
    scoped_model = VendorAccount

    def get_object(self, pk: int) -> VendorAccount:
        account = self.get_queryset().filter(pk=pk).first()
        if account is None:
            raise Http404(_("No such vendor account in your organization."))
        return account

    def back(self, account: VendorAccount) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("portal:vendor-account", kwargs={"pk": account.pk}))


class VendorAccountDetailView(ScopedAccountView):
    """One account: masked credentials, status, sync history; change it (POST)."""

    def _render(self, request: HttpRequest, account: VendorAccount, form: VendorAccountForm) -> HttpResponse:
        runs = list(account.sync_runs.order_by("-created_at", "-id")[:SYNC_HISTORY_SIZE])
        names = dict(vendor_choices())
        syncable = bool(connector_classes()[account.vendor].capabilities) if account.vendor in names else False
        return render(
            request,
            "portal/accounts/detail.html",
            self.base_context(
                account=account,
                vendor_name=names.get(account.vendor, account.vendor),
                guide=GUIDES.get(account.vendor),
                runs=runs,
                form=form,
                syncable=syncable,
                disabled=account.status == VendorAccount.Status.DISABLED,
            ),
            status=400 if form.errors else 200,
        )

    def _form(self, account: VendorAccount, data: Any = None) -> VendorAccountForm:
        non_secret = {k: v for k, v in account.credentials_masked.items() if "…" not in str(v)}
        initial = {"label": account.label, "api_base": account.api_base, **non_secret}
        return VendorAccountForm(data, vendor=account.vendor, editing=True, initial=initial)

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        account = self.get_object(pk)
        return self._render(request, account, self._form(account))

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        account = self.get_object(pk)
        if account.vendor not in connector_classes():
            raise Http404()
        form = self._form(account, request.POST)
        if not form.is_valid():
            return self._render(request, account, form)
        try:
            services.vendor_account_update(
                account=account,
                label=form.cleaned_data["label"],
                credentials=form.credentials(),
                api_base=form.cleaned_data.get("api_base") or "",
                actor=self.user,
            )
        except services.VendorAccountError as exc:
            form.add_error(None, str(exc))
            return self._render(request, account, form)
        messages.success(request, _("The account was saved."))
        return self.back(account)


class VendorAccountTestView(ScopedAccountView):
    """Ask the vendor whether the saved credentials work; nothing is written."""

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        account = self.get_object(pk)
        result = services.vendor_account_test(account=account)
        if result.ok:
            messages.success(request, _("Connection works: %(message)s") % {"message": result.message})
        else:
            messages.error(request, _("Connection failed: %(message)s") % {"message": result.message})
        return self.back(account)


class VendorAccountSyncView(ScopedAccountView):
    """Queue a sync now (the same service as the API and the scheduler)."""

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        account = self.get_object(pk)
        try:
            run = services.sync_run_request(account=account, trigger=SyncRun.Trigger.PORTAL)
        except services.VendorAccountError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(
                request,
                _("Sync %(id)s is queued; its status appears in the history below.") % {"id": run.pk},
            )
        return self.back(account)


class VendorAccountDisconnectView(ScopedAccountView):
    """Remove the account; one with money history is disabled and its credentials erased instead."""

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        account = self.get_object(pk)
        label = account.label
        services.vendor_account_delete(account=account, actor=self.user)
        if VendorAccount.objects.filter(pk=account.pk).exists():
            text = _("%(label)s is disconnected: its credentials are erased; its history is kept.")
        else:
            text = _("%(label)s is removed.")
        messages.success(request, text % {"label": label})
        return HttpResponseRedirect(reverse("portal:vendor-accounts"))

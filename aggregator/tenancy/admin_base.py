"""Building blocks of the operator console shared by every app's ``admin.py``.

- ``ModelAdmin`` / ``TabularInline``: the console's theme (django-unfold).
- ``ReadOnlyModelAdmin``: records that change only through services (ledger, payments, events).
- ``AuditedModelAdmin``: operator edits through a form leave an audit row with the changed
  fields before and after.
- ``admin_user``, ``admin_audit``, ``require_permission``: for admin actions.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from django import forms
from django.core.exceptions import PermissionDenied
from django.db import models, transaction
from django.db.models.fields.files import FieldFile
from django.http import HttpRequest, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.text import capfirst
from unfold.admin import ModelAdmin as UnfoldModelAdmin
from unfold.admin import TabularInline as UnfoldTabularInline

from aggregator.tenancy.models import AuditEvent, Organization, User
from aggregator.tenancy.services import audit_record

# Never written into an audit row, whatever the model (nor any field typed into a password input).
SECRET_FIELDS = frozenset({"password", "credentials_encrypted", "new_credentials", "hashed_key"})


def is_secret(name: str, form: Any = None) -> bool:
    if name in SECRET_FIELDS or "password" in name or "secret" in name:
        return True
    field = form.fields.get(name) if form is not None else None
    return field is not None and isinstance(field.widget, forms.PasswordInput)


class ModelAdmin(UnfoldModelAdmin):
    """Base of every page of the console."""

    # Long lists of rows never count all rows twice.
    show_full_result_count = False


class TabularInline(UnfoldTabularInline):
    pass


class ReadOnlyMixin:
    """No add, change or delete from the console, for anyone (superusers included)."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyModelAdmin(ReadOnlyMixin, ModelAdmin):
    """Records that only services write: operators read them."""


class ReadOnlyTabularInline(ReadOnlyMixin, TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True


def admin_user(request: HttpRequest) -> User:
    """The signed-in staff user of an admin request (the admin refuses anonymous requests)."""
    assert isinstance(request.user, User)
    return request.user


def require_permission(request: HttpRequest, permission: str) -> None:
    """Refuse an action to a user without ``permission`` (``app_label.codename``), even if the
    request bypassed the buttons the console shows."""
    if not request.user.has_perm(permission):
        raise PermissionDenied(f"This action needs the permission {permission}.")


def organization_of(obj: Any) -> Organization | None:
    if isinstance(obj, Organization):
        return obj
    organization = getattr(obj, "organization", None)
    return organization if isinstance(organization, Organization) else None


def jsonable(value: Any) -> Any:
    """A value as it is written into an audit row: decimals and dates as strings, rows as ids."""
    if isinstance(value, models.Model):
        return value.pk
    if isinstance(value, models.QuerySet | list | tuple | set):
        return [jsonable(item) for item in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime.date | datetime.datetime | datetime.time):
        return value.isoformat()
    if isinstance(value, FieldFile):
        return value.name or ""
    if value is None or isinstance(value, str | int | float | bool | dict):
        return value
    return str(value)


def admin_audit(
    request: HttpRequest,
    *,
    action: str,
    obj: Any,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEvent:
    """Record an operator's action on ``obj`` (who: the signed-in staff user)."""
    return audit_record(
        action=action,
        organization=organization_of(obj),
        actor=admin_user(request),
        obj=obj,
        before={k: jsonable(v) for k, v in before.items()} if before is not None else None,
        after={k: jsonable(v) for k, v in after.items()} if after is not None else None,
    )


def _form_changes(form: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    names = [name for name in form.changed_data if not is_secret(name, form)]
    before = {name: form.initial.get(name) for name in names}
    after = {name: form.cleaned_data.get(name) for name in names}
    return before, after


class AuditedModelAdmin(ModelAdmin):
    """Adds, changes and deletes made through the console's forms (and their inlines) are audited
    as ``<model>.add``, ``<model>.change`` and ``<model>.delete`` with the changed fields."""

    def _action(self, obj: Any, verb: str) -> str:
        return f"{obj._meta.model_name}.{verb}"

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        before, after = _form_changes(form)
        super().save_model(request, obj, form, change)
        if change and not after:
            return
        admin_audit(
            request,
            action=self._action(obj, "change" if change else "add"),
            obj=obj,
            before=before if change else None,
            after=after,
        )

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        saved = []
        for inline_form in formset.forms:
            instance = inline_form.instance
            if formset._should_delete_form(inline_form):
                if instance.pk is not None:
                    # Before the row goes (and with it its id); the request's transaction keeps both together.
                    initial = {n: v for n, v in inline_form.initial.items() if not is_secret(n, inline_form)}
                    admin_audit(request, action=self._action(instance, "delete"), obj=instance, before=initial)
            elif inline_form.has_changed():
                saved.append((inline_form, instance.pk is None, *_form_changes(inline_form)))
        super().save_formset(request, form, formset, change)
        for inline_form, adding, before, after in saved:
            admin_audit(
                request,
                action=self._action(inline_form.instance, "add" if adding else "change"),
                obj=inline_form.instance,
                before=None if adding else before,
                after=after,
            )

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        snapshot = {f.name: getattr(obj, f.attname) for f in obj._meta.concrete_fields if not is_secret(f.name)}
        admin_audit(request, action=self._action(obj, "delete"), obj=obj, before=snapshot)
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        with transaction.atomic():
            for obj in queryset:
                self.delete_model(request, obj)


def action_page(
    request: HttpRequest,
    model_admin: Any,
    obj: Any,
    *,
    title: str,
    description: str = "",
    submit_label: str = "",
    form: Any = None,
) -> TemplateResponse:
    """The page of a button on an object's page: it explains the action (with a form for its
    inputs, if any) and carries it out when posted."""
    opts = model_admin.model._meta
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": opts,
        "original": obj,
        "object_label": capfirst(opts.verbose_name),
        "title": title,
        "description": description,
        "submit_label": submit_label or title,
        "action_form": form,
        "back_url": reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk]),
    }
    return TemplateResponse(request, "admin/action_confirm.html", context)


def change_page(obj: Any) -> HttpResponseRedirect:
    opts = obj._meta
    return HttpResponseRedirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk]))


def rows_table(rows: Iterable[Sequence[Any]], *, more_url: str = "", more_label: Any = "") -> SafeString:
    """A small read-only table for a change page (cells are escaped unless already safe), with a link
    to the full list under it."""
    cell = "<td style='padding: 0 1rem 0.25rem 0'>{}</td>"
    body = format_html_join("", "<tr>{}</tr>", ((format_html_join("", cell, ((c,) for c in row)),) for row in rows))
    more = format_html("<a class='text-primary-600' href='{}'>{}</a>", more_url, more_label) if more_url else ""
    return format_html("<table>{}</table>{}", body, more)


def link(url: str, text: Any) -> SafeString:
    return format_html("<a class='text-primary-600' href='{}'>{}</a>", url, text)

"""Staff roles of the operator console: the groups ``finance`` and ``support`` and their permissions.

Finance moves money (finalize, void, credit notes, refunds, manual FX rates, credit purchases);
support looks after customers (organizations, vendor accounts, sync runs), requests syncs and
resends invoice emails, but cannot void, credit or refund. Credentials are write-only for everyone.

The groups are written by ``migrate`` (a ``post_migrate`` receiver) and by the command
``setup_staff_roles``: both make each group hold exactly the permissions listed here.
"""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig, apps
from django.contrib.auth.models import Group, Permission
from django.db import transaction
from django.db.models import Q

from aggregator.tenancy.models import User

FINANCE = "finance"
SUPPORT = "support"

_SUPPORT_PERMISSIONS = (
    "tenancy.view_organization",
    "tenancy.view_membership",
    "tenancy.view_invitation",
    "tenancy.view_issuer",
    "providers.view_vendoraccount",
    "providers.sync_vendoraccount",
    "providers.disable_vendoraccount",
    "providers.view_syncrun",
    "providers.view_costrecord",
    "billing.view_invoice",
    "billing.resend_invoice",
    "billing.view_creditnote",
    "billing.view_payment",
    "billing.view_paymentmethod",
    "billing.view_webhookevent",
    "billing.view_topup",
    "billing.view_topuprule",
    "billing.view_alert",
    "billing.view_alertpolicy",
    "billing.view_dunningcase",
    "billing.view_dunningstep",
    "billing.view_dunningpolicy",
)

_FINANCE_PERMISSIONS = (
    "tenancy.view_organization",
    "tenancy.change_organization",
    "tenancy.view_membership",
    "tenancy.view_invitation",
    "tenancy.view_issuer",
    "tenancy.view_auditevent",
    "providers.view_vendoraccount",
    "providers.view_syncrun",
    "providers.view_costrecord",
    # Invoices: edit drafts, finalize, void, credit, resend.
    "billing.view_invoice",
    "billing.change_invoice",
    "billing.view_invoiceline",
    "billing.add_invoiceline",
    "billing.change_invoiceline",
    "billing.delete_invoiceline",
    "billing.finalize_invoice",
    "billing.void_invoice",
    "billing.issue_credit_note",
    "billing.resend_invoice",
    "billing.view_creditnote",
    "billing.view_numberseries",
    # Payments: refunds, and processing stored gateway events again.
    "billing.view_payment",
    "billing.refund_payment",
    "billing.view_paymentmethod",
    "billing.view_webhookevent",
    "billing.change_webhookevent",
    # Ledger (read only for everyone) and the credits bought at vendors.
    "billing.view_ledgeraccount",
    "billing.view_ledgertransaction",
    "billing.view_ledgerentry",
    "billing.view_reconciliation",
    "billing.view_creditpurchase",
    "billing.add_creditpurchase",
    "billing.view_vendorfee",
    "billing.add_vendorfee",
    "billing.change_vendorfee",
    # Manual FX rates.
    "billing.view_fxrate",
    "billing.add_fxrate",
    "billing.change_fxrate",
    "billing.delete_fxrate",
    # Top-ups: turn rules off.
    "billing.view_topup",
    "billing.view_topuprule",
    "billing.change_topuprule",
    "billing.view_alert",
    "billing.view_alertpolicy",
    # Dunning: the queue, and the issuers' policies.
    "billing.view_dunningcase",
    "billing.view_dunningstep",
    "billing.view_dunningpolicy",
    "billing.add_dunningpolicy",
    "billing.change_dunningpolicy",
)

STAFF_ROLES: dict[str, tuple[str, ...]] = {FINANCE: _FINANCE_PERMISSIONS, SUPPORT: _SUPPORT_PERMISSIONS}


class StaffRoleError(Exception):
    """A staff role that cannot be set up or granted; the message says what to do."""


def _permissions(names: tuple[str, ...]) -> tuple[list[Permission], list[str]]:
    query = Q()
    for name in names:
        app_label, codename = name.split(".", 1)
        query |= Q(content_type__app_label=app_label, codename=codename)
    found = list(Permission.objects.filter(query).select_related("content_type"))
    present = {f"{p.content_type.app_label}.{p.codename}" for p in found}
    return found, [name for name in names if name not in present]


@transaction.atomic
def staff_roles_setup(*, strict: bool = True) -> dict[str, int]:
    """Create or update the groups of ``STAFF_ROLES`` so that each holds exactly its permissions.
    Returns the number of permissions per group. With ``strict``, a permission missing from the
    database (migrations not run) raises ``StaffRoleError``."""
    counts: dict[str, int] = {}
    for name, wanted in STAFF_ROLES.items():
        found, missing = _permissions(wanted)
        if missing and strict:
            raise StaffRoleError(
                f"Permissions {', '.join(missing)} do not exist yet: run `python manage.py migrate` first."
            )
        group, _created = Group.objects.get_or_create(name=name)
        group.permissions.set(found)
        counts[name] = len(found)
    return counts


@transaction.atomic
def staff_role_grant(*, email: str, role: str) -> User:
    """Make the user with ``email`` a staff member (may sign in to the console) in ``role``."""
    if role not in STAFF_ROLES:
        raise StaffRoleError(f"Unknown role {role!r}: use one of {', '.join(sorted(STAFF_ROLES))}.")
    user = User.objects.filter(email=email.strip().lower()).first()
    if user is None:
        raise StaffRoleError(f"No user has the email {email!r}: create the user first (createsuperuser or the admin).")
    group = Group.objects.filter(name=role).first()
    if group is None:
        raise StaffRoleError(f"The {role} group does not exist yet: run `python manage.py setup_staff_roles`.")
    if not user.is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    user.groups.add(group)
    return user


def _last_app_with_models() -> str:
    return [config.label for config in apps.get_app_configs() if config.models_module is not None][-1]


def staff_roles_post_migrate(sender: AppConfig, **kwargs: Any) -> None:
    """``post_migrate`` receiver: update the roles once per migrate, after the last app, when every
    app's permissions exist."""
    if sender.label == _last_app_with_models():
        staff_roles_setup(strict=False)

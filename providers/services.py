"""Writes for vendor accounts: link, update, test, sync, rotate credentials."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from aggregator.tenancy.models import ApiKey, Organization, User
from aggregator.tenancy.services import audit_record
from providers import credentials as vault
from providers.connectors.base import (
    AccountRef,
    CheckResult,
    ConnectorError,
    CredentialsRejected,
    CreditsExhausted,
    MalformedPayload,
    NotSupported,
    TransientVendorError,
    Window,
    connector_classes,
    connector_for,
)
from providers.ingest import cost_rows_upsert, usage_rows_upsert
from providers.models import BalanceObservation, SyncRun, VendorAccount

logger = logging.getLogger(__name__)


class VendorAccountError(Exception):
    """Bad input for a vendor account; the message says what to fix."""


def vendor_credentials_validate(*, vendor: str, credentials: Any) -> dict[str, str]:
    """Check a credential object against the vendor's fields. Messages never echo secret values."""
    classes = connector_classes()
    if vendor not in classes:
        raise VendorAccountError(f"Unknown vendor {vendor!r}: use one of {', '.join(sorted(classes))}.")
    if not isinstance(credentials, dict):
        raise VendorAccountError('credentials must be a JSON object, e.g. {"admin_key": "…"}.')
    fields = {f.name: f for f in classes[vendor].credential_fields}
    unknown = sorted(set(credentials) - set(fields))
    if unknown:
        raise VendorAccountError(
            f"Unknown credential field(s) for {vendor}: {', '.join(unknown)}; expected {', '.join(fields)}."
        )
    cleaned: dict[str, str] = {}
    for name, spec in fields.items():
        value = credentials.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            if spec.required:
                raise VendorAccountError(f"{spec.label} ({name}) is required for {vendor}: {spec.help}")
            continue
        if not isinstance(value, str):
            raise VendorAccountError(f"{spec.label} ({name}) must be a string.")
        cleaned[name] = value.strip()
    return cleaned


def _masked(vendor: str, credentials: dict[str, str]) -> dict[str, str]:
    fields = {f.name: f for f in connector_classes()[vendor].credential_fields}
    return {k: vault.mask(v) if fields[k].secret else v for k, v in credentials.items()}


@transaction.atomic
def vendor_account_create(
    *,
    organization: Organization,
    vendor: str,
    label: str,
    credentials: Any,
    api_base: str = "",
    actor: User | None = None,
    actor_api_key: ApiKey | None = None,
) -> VendorAccount:
    cleaned = vendor_credentials_validate(vendor=vendor, credentials=credentials)
    if not label.strip():
        raise VendorAccountError("Give the account a label, e.g. 'OpenAI production'.")
    if VendorAccount.objects.filter(organization=organization, label=label.strip()).exists():
        raise VendorAccountError(f"An account labelled {label.strip()!r} already exists: choose another label.")
    account = VendorAccount.objects.create(
        organization=organization,
        vendor=vendor,
        label=label.strip(),
        credentials_encrypted=vault.encrypt(cleaned),
        credentials_masked=_masked(vendor, cleaned),
        api_base=api_base.strip(),
    )
    audit_record(
        action="vendor_account.create",
        organization=organization,
        actor=actor,
        actor_api_key=actor_api_key,
        obj=account,
        after={
            "vendor": vendor,
            "label": account.label,
            "api_base": account.api_base,
            "credentials": account.credentials_masked,
        },
    )
    return account


@transaction.atomic
def vendor_account_update(
    *,
    account: VendorAccount,
    label: str | None = None,
    credentials: Any = None,
    api_base: str | None = None,
    actor: User | None = None,
    actor_api_key: ApiKey | None = None,
) -> VendorAccount:
    before = {"label": account.label, "api_base": account.api_base, "credentials": account.credentials_masked}
    if label is not None:
        if not label.strip():
            raise VendorAccountError("The label cannot be empty.")
        clash = VendorAccount.objects.filter(organization=account.organization, label=label.strip())
        if clash.exclude(pk=account.pk).exists():
            raise VendorAccountError(f"An account labelled {label.strip()!r} already exists: choose another label.")
        account.label = label.strip()
    if api_base is not None:
        account.api_base = api_base.strip()
    if credentials is not None:
        cleaned = vendor_credentials_validate(vendor=account.vendor, credentials=credentials)
        account.credentials_encrypted = vault.encrypt(cleaned)
        account.credentials_masked = _masked(account.vendor, cleaned)
        if account.status == VendorAccount.Status.CREDENTIALS_REJECTED:
            account.status, account.status_message = VendorAccount.Status.ACTIVE, ""
    account.save()
    audit_record(
        action="vendor_account.update",
        organization=account.organization,
        actor=actor,
        actor_api_key=actor_api_key,
        obj=account,
        before=before,
        after={"label": account.label, "api_base": account.api_base, "credentials": account.credentials_masked},
    )
    return account


@transaction.atomic
def vendor_account_delete(
    *, account: VendorAccount, actor: User | None = None, actor_api_key: ApiKey | None = None
) -> None:
    """Remove an account. One with money history (ledger postings, purchases) is disconnected
    instead: disabled, its credentials erased, its history kept for invoices and audits."""
    from billing.ledger.models import CreditPurchase, LedgerTransaction

    has_history = (
        LedgerTransaction.objects.filter(vendor_account=account).exists()
        or CreditPurchase.objects.filter(vendor_account=account).exists()
    )
    if has_history:
        VendorAccount.objects.filter(pk=account.pk).update(
            status=VendorAccount.Status.DISABLED,
            status_message="Disconnected; its history is kept.",
            credentials_encrypted=vault.encrypt({}),
            credentials_masked={},
        )
        audit_record(
            action="vendor_account.disconnect",
            organization=account.organization,
            actor=actor,
            actor_api_key=actor_api_key,
            obj=account,
            before={"vendor": account.vendor, "label": account.label, "status": account.status},
        )
        return
    audit_record(
        action="vendor_account.delete",
        organization=account.organization,
        actor=actor,
        actor_api_key=actor_api_key,
        obj=account,
        before={"vendor": account.vendor, "label": account.label},
    )
    account.delete()


def account_ref(account: VendorAccount) -> AccountRef:
    return AccountRef(
        vendor=account.vendor,
        credentials=vault.decrypt(account.credentials_encrypted),
        api_base=account.api_base or None,
        label=account.label,
    )


def vendor_account_test(*, account: VendorAccount) -> CheckResult:
    """Ask the vendor whether the credentials work, without writing any data."""
    try:
        result = connector_for(account_ref(account)).check_credentials()
    except ConnectorError as exc:
        return CheckResult(ok=False, message=exc.message)
    return result


# --- Sync -------------------------------------------------------------------------------------


def sync_window_for(
    *, account: VendorAccount, now: datetime, start: datetime | None = None, end: datetime | None = None
) -> Window:
    """The window a sync fetches: explicit bounds, or the trailing days (vendors restate recent data)
    extended back to the cursor when the last success is older, from UTC midnight to ``now``."""
    end = end or now
    if start is None:
        start = end - timedelta(days=account.trailing_days)
        if account.sync_cursor is not None and account.sync_cursor < start:
            start = account.sync_cursor
    start = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return Window(start=start, end=end)


@transaction.atomic
def sync_run_request(
    *,
    account: VendorAccount,
    trigger: str,
    start: datetime | None = None,
    end: datetime | None = None,
) -> SyncRun:
    """Create a pending run and queue it once committed. Returns at once with the run."""
    from providers.tasks import sync_run_execute_task

    if account.status == VendorAccount.Status.DISABLED:
        raise VendorAccountError("This account is disabled: enable it before syncing.")
    if start and end and end <= start:
        raise VendorAccountError("end must be after start.")
    window = sync_window_for(account=account, now=timezone.now(), start=start, end=end)
    run = SyncRun.objects.create(
        organization_id=account.organization_id,
        vendor_account=account,
        trigger=trigger,
        window_start=window.start,
        window_end=window.end,
    )
    sync_run_execute_task.delay_on_commit(run.pk)
    return run


_FAILURE_KINDS: list[tuple[type[ConnectorError], str]] = [
    (CreditsExhausted, "credits_exhausted"),
    (CredentialsRejected, "credentials_rejected"),
    (TransientVendorError, "transient"),
    (MalformedPayload, "malformed_payload"),
    (NotSupported, "not_supported"),
    (ConnectorError, "vendor_error"),
]


def sync_run_execute(*, sync_run_id: int) -> SyncRun:
    """Fetch the run's window from the vendor and upsert it. Safe to run twice: a finished run is
    left alone, a run interrupted mid-way is simply done again (the upsert is idempotent).
    A failure writes nothing from this run and records a message that says what to do."""
    run = SyncRun.objects.select_related("vendor_account").get(pk=sync_run_id)
    if run.status in (SyncRun.Status.SUCCEEDED, SyncRun.Status.FAILED):
        return run
    account = run.vendor_account
    assert run.window_start is not None and run.window_end is not None
    window = Window(start=run.window_start, end=run.window_end)
    started = time.monotonic()
    SyncRun.objects.filter(pk=run.pk).update(status=SyncRun.Status.RUNNING, started_at=timezone.now())
    try:
        connector = connector_for(account_ref(account))
        capabilities = type(connector).capabilities
        costs = connector.fetch_costs(window) if "costs" in capabilities else []
        usage = connector.fetch_usage(window) if "usage" in capabilities else []
        balance = connector.fetch_balance() if "balance" in capabilities else None
    except vault.CredentialsKeyError as exc:
        return _sync_failed(run, account, "credentials_key", str(exc), started)
    except ConnectorError as exc:
        kind = next(k for cls, k in _FAILURE_KINDS if isinstance(exc, cls))
        return _sync_failed(run, account, kind, exc.message, started)

    now = timezone.now()
    with transaction.atomic():
        cost_result = cost_rows_upsert(account=account, rows=costs, now=now)
        usage_result = usage_rows_upsert(account=account, rows=usage, now=now)
        written = cost_result.written + usage_result.written
        if balance is not None:
            BalanceObservation.objects.create(
                organization_id=account.organization_id,
                vendor_account=account,
                amount=balance.amount,
                currency=balance.currency,
                observed_at=balance.observed_at,
                details={k: str(v) for k, v in balance.details.items()},
                sync_run=run,
            )
        SyncRun.objects.filter(pk=run.pk).update(
            status=SyncRun.Status.SUCCEEDED,
            rows_read=cost_result.read + usage_result.read,
            rows_written=written,
            finished_at=timezone.now(),
            error="",
            error_kind="",
        )
        cursor = max(account.sync_cursor, window.end) if account.sync_cursor else window.end
        VendorAccount.objects.filter(pk=account.pk).update(
            sync_cursor=cursor,
            last_sync_at=now,
            last_success_at=now,
            failure_streak=0,
            status=VendorAccount.Status.ACTIVE,
            status_message="",
        )
    logger.info(
        "sync %s of account %s (%s): %d rows read, %d written in %.2fs",
        run.pk,
        account.pk,
        account.vendor,
        cost_result.read + usage_result.read,
        written,
        time.monotonic() - started,
    )
    run.refresh_from_db()
    return run


def _sync_failed(run: SyncRun, account: VendorAccount, kind: str, message: str, started: float) -> SyncRun:
    now = timezone.now()
    status = {
        "credits_exhausted": VendorAccount.Status.CREDITS_EXHAUSTED,
        "credentials_rejected": VendorAccount.Status.CREDENTIALS_REJECTED,
    }.get(kind, account.status)
    with transaction.atomic():
        SyncRun.objects.filter(pk=run.pk).update(
            status=SyncRun.Status.FAILED, error_kind=kind, error=message, finished_at=now
        )
        VendorAccount.objects.filter(pk=account.pk).update(
            last_sync_at=now,
            failure_streak=account.failure_streak + 1,
            status=status,
            status_message=message if kind in ("credits_exhausted", "credentials_rejected") else account.status_message,
        )
    logger.warning(
        "sync %s of account %s (%s) failed after %.2fs [%s]: %s",
        run.pk,
        account.pk,
        account.vendor,
        time.monotonic() - started,
        kind,
        message,
    )
    run.refresh_from_db()
    return run


def vendor_accounts_sync_due(*, now: datetime) -> list[SyncRun]:
    """Queue a sync for every active account whose interval has passed and has no run in flight."""
    runs = []
    busy = SyncRun.objects.filter(status__in=[SyncRun.Status.PENDING, SyncRun.Status.RUNNING]).values(
        "vendor_account_id"
    )
    candidates = VendorAccount.objects.exclude(status=VendorAccount.Status.DISABLED).exclude(pk__in=busy)
    classes = connector_classes()
    for account in candidates:
        if account.vendor not in classes or not classes[account.vendor].capabilities:
            continue  # file-import accounts have nothing to fetch
        due = account.last_sync_at is None or now - account.last_sync_at >= timedelta(
            minutes=account.sync_interval_minutes
        )
        if due:
            runs.append(sync_run_request(account=account, trigger=SyncRun.Trigger.SCHEDULE))
    return runs


def credentials_rotate_all() -> int:
    """Re-encrypt every account's credentials under the newest key. Returns the number of accounts."""
    count = 0
    for account in VendorAccount.objects.only("pk", "credentials_encrypted").iterator():
        with transaction.atomic():
            locked = VendorAccount.objects.select_for_update().only("pk", "credentials_encrypted").get(pk=account.pk)
            VendorAccount.objects.filter(pk=locked.pk).update(
                credentials_encrypted=vault.rotate(locked.credentials_encrypted)
            )
        count += 1
    return count


@transaction.atomic
def cost_file_import(
    *,
    account: VendorAccount,
    content: str | bytes,
    actor: User | None = None,
    actor_api_key: ApiKey | None = None,
) -> SyncRun:
    """Import a cost CSV into a file-import account: all rows or none (``CsvImportError`` lists
    every bad line). Re-importing the same file updates rows instead of adding them."""
    from providers.connectors.csv_import import parse_cost_csv

    if account.vendor != "file_import":
        raise VendorAccountError(
            f"{account.label} is synced from {account.vendor}'s API; import files into a 'file_import' account."
        )
    rows = parse_cost_csv(content, vendor=account.vendor)
    now = timezone.now()
    result = cost_rows_upsert(account=account, rows=rows, now=now)
    starts = [r.charge_period_start for r in rows]
    ends = [r.charge_period_end for r in rows]
    run = SyncRun.objects.create(
        organization_id=account.organization_id,
        vendor_account=account,
        trigger=SyncRun.Trigger.IMPORT,
        status=SyncRun.Status.SUCCEEDED,
        window_start=min(starts) if starts else None,
        window_end=max(ends) if ends else None,
        rows_read=result.read,
        rows_written=result.written,
        started_at=now,
        finished_at=timezone.now(),
    )
    VendorAccount.objects.filter(pk=account.pk).update(last_sync_at=now, last_success_at=now)
    audit_record(
        action="cost_file.import",
        organization=account.organization,
        actor=actor,
        actor_api_key=actor_api_key,
        obj=run,
        after={"rows_read": result.read, "rows_written": result.written},
    )
    return run

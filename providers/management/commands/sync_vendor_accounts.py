from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from providers.models import SyncRun, VendorAccount
from providers.services import VendorAccountError, sync_run_execute, sync_window_for


class Command(BaseCommand):
    help = "Sync vendor accounts now, in this process, showing progress (all active accounts by default)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", help="Only this organization (slug)")
        parser.add_argument("--account", type=int, help="Only this vendor account (id)")
        parser.add_argument("--since", help="Fetch from this UTC day (YYYY-MM-DD) instead of the trailing window")

    def handle(self, *args: Any, **options: Any) -> None:
        since = None
        if options["since"]:
            try:
                since = datetime.strptime(options["since"], "%Y-%m-%d").replace(tzinfo=UTC)
            except ValueError:
                raise CommandError(f"--since {options['since']!r} is not a date: use YYYY-MM-DD.") from None
        accounts = VendorAccount.objects.exclude(status=VendorAccount.Status.DISABLED).exclude(vendor="file_import")
        if options["org"]:
            accounts = accounts.filter(organization__slug=options["org"])
        if options["account"]:
            accounts = accounts.filter(pk=options["account"])
        selected = list(accounts.select_related("organization").order_by("organization__slug", "label"))
        if not selected:
            raise CommandError(
                "No active vendor account matches: check --org / --account (disabled accounts are skipped)."
            )
        failures = 0
        for index, account in enumerate(selected, start=1):
            prefix = f"[{index}/{len(selected)}] {account.organization.slug} / {account.label} ({account.vendor})"
            self.stdout.write(f"{prefix} …", ending="")
            self.stdout.flush()
            try:
                run = self._run(account, since)
            except VendorAccountError as exc:
                self.stdout.write(f" skipped: {exc}")
                continue
            if run.status == SyncRun.Status.SUCCEEDED:
                self.stdout.write(
                    f" ok: {run.rows_read} rows read, {run.rows_written} written in {run.duration_seconds or 0:.1f}s"
                )
            else:
                failures += 1
                self.stdout.write(f" failed [{run.error_kind}]: {run.error}")
        if failures:
            raise CommandError(f"{failures} of {len(selected)} account(s) failed; see the messages above.")

    def _run(self, account: VendorAccount, since: datetime | None) -> SyncRun:
        from django.utils import timezone

        window = sync_window_for(account=account, now=timezone.now(), start=since)
        with transaction.atomic():
            run = SyncRun.objects.create(
                organization_id=account.organization_id,
                vendor_account=account,
                trigger=SyncRun.Trigger.COMMAND,
                window_start=window.start,
                window_end=window.end,
            )
        return sync_run_execute(sync_run_id=run.pk)

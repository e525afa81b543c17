from __future__ import annotations

from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.ledger.flows import vendor_account_settle
from providers.models import VendorAccount


class Command(BaseCommand):
    help = "Settle vendor accounts now: post each changed day's consumption (or one --date) into the ledger."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", help="Only this organization (slug)")
        parser.add_argument("--date", help="Settle this UTC day only (YYYY-MM-DD)")

    def handle(self, *args: Any, **options: Any) -> None:
        day = None
        if options["date"]:
            try:
                day = date.fromisoformat(options["date"])
            except ValueError:
                raise CommandError(f"--date {options['date']!r} is not a date: use YYYY-MM-DD.") from None
        accounts = VendorAccount.objects.exclude(status=VendorAccount.Status.DISABLED).select_related("organization")
        if options["org"]:
            accounts = accounts.filter(organization__slug=options["org"])
            if not accounts.exists():
                raise CommandError(f"No active vendor account in organization {options['org']!r}.")
        failed = 0
        for account in accounts.order_by("organization__slug", "label"):
            result = vendor_account_settle(vendor_account_id=account.pk, day=day)
            line = f"{account.organization.slug} / {account.label}: {result.days} day(s), {result.postings} posting(s)"
            if result.errors:
                failed += 1
                line += " — " + "; ".join(result.errors)
            self.stdout.write(line)
        if failed:
            raise CommandError(f"{failed} account(s) could not be fully settled; see the messages above.")

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from aggregator.tenancy.models import Organization
from billing.invoicing.close import CloseError, month_bounds, period_close
from billing.invoicing.services import InvoiceError


class Command(BaseCommand):
    help = "Close a month: settle, build each organization's invoice and finalize it (unless it awaits review)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--period", required=True, help="YYYY-MM")
        parser.add_argument("--org", help="Only this organization (slug)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            month_bounds(options["period"])
        except CloseError as exc:
            raise CommandError(str(exc)) from None
        organizations = Organization.objects.order_by("slug")
        if options["org"]:
            organizations = organizations.filter(slug=options["org"])
            if not organizations.exists():
                raise CommandError(f"No organization with slug {options['org']!r}.")
        failed = 0
        for organization in organizations:
            try:
                invoice = period_close(organization=organization, period=options["period"])
            except (CloseError, InvoiceError) as exc:
                failed += 1
                self.stdout.write(f"{organization.slug}: not closed: {exc}")
                continue
            self.stdout.write(
                f"{organization.slug}: {invoice} {invoice.status}, total {invoice.total:.2f} {invoice.currency}, "
                f"due {invoice.amount_due:.2f}"
            )
        if failed:
            raise CommandError(f"{failed} organization(s) could not be closed; see above.")

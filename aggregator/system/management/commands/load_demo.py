from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from aggregator.system.demo import STAFF_EMAILS, demo_load


class Command(BaseCommand):
    help = "Load the demo operator, customer organization (slug 'demo') and logins; safe to run again."

    def handle(self, *args: Any, **options: Any) -> None:
        logins = demo_load()
        site = settings.SITE_URL
        self.stdout.write(
            "\n".join(
                [
                    "Demo ready.",
                    f"  Operator console: {site}/admin/  {logins.operator_email} / {logins.operator_password}",
                    f"                    (staff roles: {', '.join(STAFF_EMAILS.values())}, same password)",
                    f"  Customer portal:  {site}/        {logins.customer_email} / {logins.customer_password}"
                    f"  (organization '{logins.organization_slug}')",
                    f"  API docs:         {site}/api/docs/",
                ]
            )
        )

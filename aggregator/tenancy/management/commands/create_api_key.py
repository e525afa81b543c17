from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from aggregator.tenancy.models import Organization, Role
from aggregator.tenancy.services import TenancyError, api_key_create


class Command(BaseCommand):
    help = "Create an API key for an organization and print it once (only its hash is stored)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", required=True, help="Organization slug")
        parser.add_argument("--name", required=True, help="A label saying what uses the key")
        parser.add_argument("--role", default=Role.BILLING_ADMIN, choices=Role.values)

    def handle(self, *args: Any, **options: Any) -> None:
        organization = Organization.objects.filter(slug=options["org"]).first()
        if organization is None:
            raise CommandError(
                f"No organization with slug {options['org']!r}: list them in the admin or create one first."
            )
        try:
            key, raw_key = api_key_create(organization=organization, name=options["name"], role=options["role"])
        except TenancyError as exc:
            raise CommandError(str(exc)) from None
        self.stderr.write(
            f"API key {key.name!r} for {organization.slug} ({key.role}). Copy it now; it is not shown again:"
        )
        self.stdout.write(raw_key)

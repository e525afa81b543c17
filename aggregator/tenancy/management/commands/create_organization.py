from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from aggregator.tenancy.services import TenancyError, organization_create


class Command(BaseCommand):
    help = "Create a customer organization, optionally with an owner (created if new; they set a password by reset)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--slug", required=True)
        parser.add_argument("--name", required=True)
        parser.add_argument("--currency", required=True, help="Invoice currency, ISO 4217 (USD, EUR, JPY…)")
        parser.add_argument("--owner", help="Email address of the owner")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            organization = organization_create(
                slug=options["slug"], name=options["name"], currency=options["currency"], owner_email=options["owner"]
            )
        except TenancyError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Created organization {organization.slug} ({organization.name}, {organization.currency}).")

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from aggregator.tenancy.staff import STAFF_ROLES, StaffRoleError, staff_role_grant, staff_roles_setup


class Command(BaseCommand):
    help = (
        "Create or update the operator console's staff roles (groups finance and support) with their "
        "permissions; `migrate` does this too. With --grant ROLE EMAIL, also put that user in the role."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--grant",
            nargs=2,
            action="append",
            default=[],
            metavar=("ROLE", "EMAIL"),
            help=f"Make the user a staff member in ROLE ({', '.join(sorted(STAFF_ROLES))}); repeatable.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            counts = staff_roles_setup()
            for role, email in options["grant"]:
                user = staff_role_grant(email=email, role=role)
                self.stdout.write(f"{user.email} is staff in the {role} role.")
        except StaffRoleError as exc:
            raise CommandError(str(exc)) from None
        for role, count in counts.items():
            self.stdout.write(f"Role {role}: {count} permissions.")

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from providers.credentials import CredentialsKeyError
from providers.services import credentials_rotate_all


class Command(BaseCommand):
    help = (
        "Re-encrypt every vendor account's credentials under the newest key in CREDENTIALS_KEYS. "
        "Afterwards the older keys can be removed from CREDENTIALS_KEYS."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            count = credentials_rotate_all()
        except CredentialsKeyError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Re-encrypted the credentials of {count} vendor account(s) under the newest key.")

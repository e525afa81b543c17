from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.fx.services import FxImportError, fx_rates_import_ecb


class Command(BaseCommand):
    help = (
        "Import ECB euro foreign-exchange reference rates from a file (eurofxref-daily.xml, "
        "eurofxref-hist-90d.xml or eurofxref-hist.xml). Re-importing a file changes nothing."
    )
    # Lets tests (and callers of call_command) pass the stream that "--file -" reads.
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--file", required=True, help="Path of the ECB XML file, or - to read standard input")

    def handle(self, *args: Any, **options: Any) -> None:
        path: str = options["file"]
        if path == "-":
            stream = options.get("stdin") or sys.stdin
            content: bytes | str = stream.buffer.read() if hasattr(stream, "buffer") else stream.read()
        else:
            try:
                content = Path(path).read_bytes()
            except OSError as exc:
                raise CommandError(
                    f"Cannot read {path}: {exc.strerror or exc}. Check the path and try again."
                ) from None
        try:
            result = fx_rates_import_ecb(xml=content)
        except FxImportError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"Imported {result.days} days: {result.rates_written} rates written, {result.rates_unchanged} unchanged"
        )

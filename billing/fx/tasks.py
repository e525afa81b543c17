"""Import of an ECB reference-rate file that a download job (cron, systemd timer) drops on disk.

The worker has no internet access by design, so it never fetches the file itself; see docs/fx-rates.md.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from celery import shared_task
from django.conf import settings
from django.utils import timezone

logger = logging.getLogger(__name__)

# The newest ECB day is at most 4 days old (Easter); older means the download job has stopped.
STALE_AFTER_DAYS = 5


def default_file() -> Path:
    """Where the task looks when no path is given: settings.FX_ECB_FILE, else VAR_DIR/fx/eurofxref-daily.xml."""
    configured = getattr(settings, "FX_ECB_FILE", None)
    return Path(configured) if configured else Path(settings.VAR_DIR) / "fx" / "eurofxref-daily.xml"


@shared_task(name="billing.fx.tasks.fx_rates_import_file")
def fx_rates_import_file(path: str | None = None) -> dict[str, Any]:
    """Import the file at ``path`` (default: ``default_file()``). Safe to run any number of times.

    A missing file is logged and skipped (no download has happened yet, or FX is not used); a
    malformed one fails the task with the importer's message and writes nothing.
    """
    from billing.fx.services import fx_rates_import_ecb

    file = Path(path) if path else default_file()
    if not file.is_file():
        logger.warning("FX rates file %s not found; nothing imported (is the ECB download job running?)", file)
        return {"file": str(file), "skipped": "file not found"}
    result = fx_rates_import_ecb(xml=file.read_bytes())
    logger.info(
        "FX rates from %s: %d days, %d rates written, %d unchanged, newest day %s",
        file, result.days, result.rates_written, result.rates_unchanged, result.last_day,
    )  # fmt: skip
    if result.last_day is not None and (timezone.now().date() - result.last_day).days > STALE_AFTER_DAYS:
        logger.warning(
            "FX rates file %s is stale: its newest day is %s; check the job that downloads it", file, result.last_day
        )
    return {
        "file": str(file),
        "days": result.days,
        "rates_written": result.rates_written,
        "rates_unchanged": result.rates_unchanged,
        "last_day": result.last_day.isoformat() if result.last_day else None,
    }

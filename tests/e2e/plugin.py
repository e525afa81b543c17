"""Where the browser tests save their screenshots, and the line of the test report that says so.

The folder is ``var/screenshots/<UTC timestamp>/`` (or ``$SCREENSHOTS_DIR`` when set), chosen once
by the process that starts the run; pytest-xdist workers inherit it through the environment, so a
parallel run writes one folder. It is made only when a test saves a screenshot.

Registered from ``tests/conftest.py`` (``pytest_plugins``) so the summary hook runs in the
controlling process, which never collects ``tests/e2e`` itself under pytest-xdist.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

ENV = "SCREENSHOTS_DIR"


def screenshots_dir() -> Path:
    return Path(os.environ[ENV])


def pytest_configure(config: pytest.Config) -> None:
    if not os.environ.get(ENV):
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        var = Path(os.environ.get("VAR_DIR") or config.rootpath / "var")
        os.environ[ENV] = str(var / "screenshots" / stamp)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    folder = screenshots_dir()
    shots = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if shots:
        terminalreporter.write_sep("-", "browser test screenshots")
        try:
            shown = folder.relative_to(Path.cwd())
        except ValueError:
            shown = folder
        terminalreporter.write_line(f"{len(shots)} screenshots in {shown}/")

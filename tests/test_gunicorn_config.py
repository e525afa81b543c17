"""``gunicorn.conf.py``: threaded workers, counts from the environment."""

from __future__ import annotations

import os
import runpy
from pathlib import Path

import pytest

CONFIG = Path(__file__).resolve().parent.parent / "gunicorn.conf.py"


def test_defaults_are_threaded_workers_one_more_than_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WEB_CONCURRENCY", "GUNICORN_THREADS", "GUNICORN_BIND", "GUNICORN_TIMEOUT", "GUNICORN_ACCESS_LOG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    config = runpy.run_path(str(CONFIG))
    assert (config["worker_class"], config["workers"], config["threads"]) == ("gthread", 3, 4)
    assert (config["bind"], config["timeout"], config["accesslog"]) == ("0.0.0.0:8000", 30, None)


def test_the_environment_sets_the_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "6")
    monkeypatch.setenv("GUNICORN_THREADS", "8")
    monkeypatch.setenv("GUNICORN_BIND", "127.0.0.1:9000")
    monkeypatch.setenv("GUNICORN_ACCESS_LOG", "1")
    config = runpy.run_path(str(CONFIG))
    assert (config["workers"], config["threads"], config["bind"], config["accesslog"]) == (6, 8, "127.0.0.1:9000", "-")

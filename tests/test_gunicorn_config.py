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


def test_each_worker_loads_what_its_first_requests_would_before_taking_them(monkeypatch: pytest.MonkeyPatch) -> None:
    from aggregator import warmup

    calls: list[str] = []
    monkeypatch.setattr(warmup, "web_worker_warm", lambda: calls.append("warm"))
    runpy.run_path(str(CONFIG))["post_worker_init"](object())
    assert calls == ["warm"]


def test_the_warm_up_loads_the_urlconf_the_cache_and_the_broker_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.core.cache import caches
    from django.urls import clear_url_caches, get_resolver

    from aggregator.celery import app
    from aggregator.warmup import web_worker_warm

    clear_url_caches()
    assert "url_patterns" not in get_resolver().__dict__
    asked: list[str] = []
    backend = type(caches["default"])
    real_get = backend.get
    monkeypatch.setattr(backend, "get", lambda self, key, *a, **kw: asked.append(key) or real_get(self, key, *a, **kw))
    connected: list[bool] = []
    real_acquire = app.producer_or_acquire

    def acquire(*args: object, **kwargs: object) -> object:
        connected.append(True)
        return real_acquire(*args, **kwargs)

    monkeypatch.setattr(app, "producer_or_acquire", acquire)
    web_worker_warm()
    assert "url_patterns" in get_resolver().__dict__  # loaded (a cached property)
    assert asked == ["warmup:web-worker"] and connected == [True]


def test_a_cache_or_broker_that_is_down_is_a_warning_not_a_failed_start(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from django.core.cache import caches

    from aggregator.celery import app
    from aggregator.warmup import web_worker_warm

    def down(*args: object, **kwargs: object) -> object:
        raise ConnectionRefusedError("down")

    monkeypatch.setattr(type(caches["default"]), "get", down)
    monkeypatch.setattr(app, "producer_or_acquire", down)
    with caplog.at_level("WARNING", logger="aggregator.warmup"):
        web_worker_warm()
    assert [r.getMessage() for r in caplog.records] == [
        "cache not reachable at worker start: ConnectionRefusedError",
        "broker not reachable at worker start: ConnectionRefusedError",
    ]

"""A task enqueued by the web process runs in a separate, real worker process: through the embedded
(filesystem) broker always, and through Redis when CELERY_BROKER_URL points at it (as in CI)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.test import Client

from aggregator.celery import app as celery_app
from aggregator.system import services
from aggregator.system.models import Heartbeat
from aggregator.system.tasks import heartbeat_process
from tests.factories import UserFactory

ROOT = Path(__file__).resolve().parent.parent
CONFIGURED_BROKER = os.environ.get("CELERY_BROKER_URL", "")
BROKERS = ["embedded"] + (
    ["configured"] if CONFIGURED_BROKER and not CONFIGURED_BROKER.startswith("filesystem") else []
)


def _database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or ""
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


@pytest.fixture
def broker(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Point this (web) process's Celery app at the broker under test; yield the worker's env."""
    env = {
        "DEBUG": "1",
        "DJANGO_SETTINGS_MODULE": "aggregator.settings",
        "DATABASE_URL": _database_url(),
        "PYTHONPATH": str(ROOT),
        "VAR_DIR": str(tmp_path / "var"),
    }
    saved = (celery_app.conf.broker_url, celery_app.conf.broker_transport_options, celery_app.conf.task_always_eager)
    celery_app.conf.task_always_eager = False  # this test needs the real broker
    if request.param == "embedded":
        folder = tmp_path / "broker"
        options = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
        }
        for path in options.values():
            if isinstance(path, str):
                Path(path).mkdir(parents=True, exist_ok=True)
        # Celery reads CELERY_BROKER_URL from the environment before its configuration.
        monkeypatch.setenv("CELERY_BROKER_URL", "filesystem://")
        celery_app.conf.broker_url = "filesystem://"
        celery_app.conf.broker_transport_options = options
        env |= {"CELERY_BROKER_URL": "filesystem://", "CELERY_FILESYSTEM_BROKER_DIR": str(folder)}
    else:
        celery_app.conf.broker_url = CONFIGURED_BROKER
        env["CELERY_BROKER_URL"] = CONFIGURED_BROKER
    _reset_producer_pool()
    yield env
    celery_app.conf.broker_url, celery_app.conf.broker_transport_options, celery_app.conf.task_always_eager = saved
    _reset_producer_pool()


def _reset_producer_pool() -> None:
    # Connections are pooled per broker address, app-wide and in kombu's global registry: drop both
    # so the next message goes to the broker now configured.
    from kombu import pools

    pools.reset()
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@pytest.fixture
def worker(broker: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "aggregator",
            "worker",
            "--pool",
            "solo",
            "--loglevel",
            "WARNING",
            "-Q",
            ",".join(("sync", "settlement", "invoicing", "payments", "default")),
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=ROOT,
        env={**os.environ, **broker},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    yield process
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("broker", BROKERS, indirect=True)
def test_task_enqueued_by_the_web_runs_in_a_separate_worker(worker: subprocess.Popen[bytes], broker: Any) -> None:
    staff = UserFactory(is_staff=True)
    web = Client()
    web.force_login(staff)
    response = web.post("/ops/worker-check/")
    assert response.status_code == 202
    heartbeat_id = response.json()["heartbeat_id"]

    deadline = time.monotonic() + 60
    heartbeat = Heartbeat.objects.get(pk=heartbeat_id)
    while heartbeat.processed_at is None and time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.2)
        heartbeat.refresh_from_db()
    if heartbeat.processed_at is None:
        worker.terminate()
        output = worker.communicate(timeout=10)[0].decode(errors="replace")
        pytest.fail(f"The worker did not process the heartbeat within 60 s. Worker output:\n{output[-3000:]}")
    assert heartbeat.worker_pid == worker.pid
    assert heartbeat.worker_pid != os.getpid()


def test_a_task_is_sent_only_when_the_transaction_commits(
    db: Any, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    sent: list[tuple[Any, ...]] = []
    monkeypatch.setattr(
        heartbeat_process, "apply_async", lambda args=None, kwargs=None, **opts: sent.append(tuple(args))
    )
    with django_capture_on_commit_callbacks(execute=True):
        committed = services.heartbeat_request()
    assert sent == [(committed.pk,)]

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError):
        with transaction.atomic():
            services.heartbeat_request()
            raise RuntimeError("roll back")
    assert sent == [(committed.pk,)]


def test_processing_a_heartbeat_twice_keeps_the_first_result(db: Any) -> None:
    heartbeat = Heartbeat.objects.create()
    services.heartbeat_process(heartbeat_id=heartbeat.pk)
    first = Heartbeat.objects.get(pk=heartbeat.pk)
    Heartbeat.objects.filter(pk=heartbeat.pk).update(worker_pid=1)  # as if another worker had answered first
    services.heartbeat_process(heartbeat_id=heartbeat.pk)
    again = Heartbeat.objects.get(pk=heartbeat.pk)
    assert first.processed_at is not None
    assert (again.processed_at, again.worker_pid) == (first.processed_at, 1)


def test_celery_is_wired_for_redelivery_json_and_the_flow_queues() -> None:
    conf = celery_app.conf
    assert (conf.task_acks_late, conf.task_reject_on_worker_lost) == (True, True)
    assert (conf.task_serializer, list(conf.accept_content)) == ("json", ["json"])
    assert conf.task_time_limit and conf.task_soft_time_limit and conf.task_soft_time_limit < conf.task_time_limit
    assert {q.name for q in conf.task_queues} == {"sync", "settlement", "invoicing", "payments", "default"}
    assert celery_app.amqp.router.route({}, "providers.tasks.vendor_account_sync")["queue"].name == "sync"
    assert celery_app.amqp.router.route({}, "billing.payments.tasks.top_up_charge")["queue"].name == "payments"
    assert conf.beat_scheduler == "django_celery_beat.schedulers:DatabaseScheduler"
    assert settings.CELERY_BROKER_URL


def test_worker_check_is_for_operators_only(db: Any) -> None:
    customer = UserFactory()
    web = Client()
    web.force_login(customer)
    response = web.post("/ops/worker-check/")
    assert response.status_code == 302
    assert Heartbeat.objects.count() == 0

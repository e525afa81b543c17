"""The webhook intake: one INSERT per delivery, one drain task per burst, every event processed once.

``test_stripe.py`` covers what the events do (payments, refunds, disputes) end to end with
localstripe; here the events are ones the product stores and ignores (``customer.updated``), so the
tests are about the intake alone.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import stripe
from django.core.cache import cache, caches
from django.db import connection, connections
from django.test import Client
from django.test.utils import CaptureQueriesContext

from billing.payments import services
from billing.payments.gateways import FAKE_GATEWAY
from billing.payments.records import WebhookEvent

WEBHOOK_SECRET = "whsec_FAKE_intake_0000"
POSTGRESQL = connection.vendor == "postgresql"

Deliver = Callable[..., Any]


@pytest.fixture(autouse=True)
def stripe_settings(settings: Any) -> None:
    settings.PAYMENT_GATEWAYS = [FAKE_GATEWAY, "billing.payments.gateways.stripe.StripeGateway"]
    settings.STRIPE_SECRET_KEY = "sk_test_FAKE_intake_0000"  # never called: the events need no API call
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"
    settings.STRIPE_MAX_NETWORK_RETRIES = 0


@pytest.fixture(autouse=True)
def drain_trigger() -> Iterator[None]:
    """No drain trigger left over from another test (nor for the next one)."""
    cache.delete(services.WEBHOOK_DRAIN_KEY)
    services._drain_queued.until = 0.0
    yield
    cache.delete(services.WEBHOOK_DRAIN_KEY)
    services._drain_queued.until = 0.0


@pytest.fixture
def queued(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The drain tasks queued (recorded, not run)."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(services.webhook_events_drain_task, "apply_async", lambda **kw: calls.append(kw))
    return calls


def event(n: int) -> dict[str, Any]:
    return {
        "id": f"evt_intake_{n:04d}", "object": "event", "type": "customer.updated", "livemode": False,
        "data": {"object": {"id": f"cus_intake_{n:04d}", "object": "customer", "email": f"ap{n}@example.test"}},
    }  # fmt: skip


@pytest.fixture
def deliver(django_capture_on_commit_callbacks: Any) -> Deliver:
    """POST an event signed as Stripe signs it; callbacks run as the row commits."""

    def send(payload: dict[str, Any], *, client: Client | None = None) -> Any:
        raw = json.dumps(payload, separators=(",", ":"))
        header = stripe.WebhookSignature.generate_signature_header(raw, WEBHOOK_SECRET)
        with django_capture_on_commit_callbacks(execute=True):
            return (client or Client()).post(
                "/webhooks/stripe/", data=raw, content_type="application/json", HTTP_STRIPE_SIGNATURE=header
            )

    return send


@pytest.mark.django_db
def test_a_new_delivery_is_one_insert_and_nothing_else(deliver: Deliver, queued: list[dict[str, Any]]) -> None:
    with CaptureQueriesContext(connection) as queries:
        response = deliver(event(1))
    assert response.status_code == 200
    assert response.json() == {"received": True, "event": "evt_intake_0001", "duplicate": False}
    assert [q["sql"].split(" ", 2)[:2] for q in queries.captured_queries] == [["INSERT", "INTO"]]
    stored = WebhookEvent.objects.get()
    assert (stored.event_id, stored.type, stored.status, stored.attempts) == (
        "evt_intake_0001", "customer.updated", "received", 0)  # fmt: skip
    assert stored.payload == event(1)  # the body as sent
    with CaptureQueriesContext(connection) as queries:
        again = deliver(event(1))
    assert again.json() == {"received": True, "event": "evt_intake_0001", "duplicate": True}
    assert [q["sql"].split(" ", 1)[0] for q in queries.captured_queries] == ["INSERT", "SELECT"]
    assert len(queued) == 1  # a redelivery queues nothing


@pytest.mark.django_db
def test_a_redelivery_of_an_event_that_failed_queues_it_again(
    deliver: Deliver, queued: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    deliver(event(1))
    WebhookEvent.objects.update(status=WebhookEvent.Status.FAILED, attempts=1, error="RuntimeError: hiccup")
    again: list[int] = []
    monkeypatch.setattr(services.webhook_event_process_task, "delay", again.append)
    assert deliver(event(1)).json()["duplicate"] is True
    assert again == [WebhookEvent.objects.get().pk]


@pytest.mark.django_db
def test_a_burst_queues_one_drain_which_processes_every_event_once_in_order(
    deliver: Deliver, queued: list[dict[str, Any]]
) -> None:
    answers = [deliver(event(n)) for n in range(5)] + [deliver(event(1)), deliver(event(3))]
    assert [a.json()["duplicate"] for a in answers] == [False] * 5 + [True, True]
    assert len(queued) == 1  # one task for the burst, a second from now
    assert 0.5 < (queued[0]["eta"] - datetime.now(UTC)).total_seconds() <= services.WEBHOOK_DRAIN_DELAY
    assert set(WebhookEvent.objects.values_list("status", flat=True)) == {"received"}

    drained = services.webhook_events_drain()
    assert [e.event_id for e in drained] == [f"evt_intake_{n:04d}" for n in range(5)]  # oldest first
    rows = WebhookEvent.objects.order_by("pk")
    assert [(e.status, e.attempts) for e in rows] == [("ignored", 1)] * 5
    assert services.webhook_events_drain() == []  # a second drain finds nothing left
    assert [e.attempts for e in WebhookEvent.objects.order_by("pk")] == [1] * 5


@pytest.mark.django_db
def test_an_event_stored_after_the_drain_started_queues_the_next_drain(
    deliver: Deliver, queued: list[dict[str, Any]]
) -> None:
    deliver(event(1))
    deliver(event(2))
    assert len(queued) == 1
    services.webhook_events_drain()  # clears the trigger first
    deliver(event(3))
    assert len(queued) == 2
    assert WebhookEvent.objects.get(event_id="evt_intake_0003").status == "received"
    services.webhook_events_drain()
    assert set(WebhookEvent.objects.values_list("status", flat=True)) == {"ignored"}


@pytest.mark.django_db
def test_with_tasks_run_at_once_each_delivery_is_processed_before_the_answer(deliver: Deliver) -> None:
    # CELERY_TASK_ALWAYS_EAGER (the tests' settings): the drain runs on commit, the countdown ignored.
    for n in range(3):
        assert deliver(event(n)).status_code == 200
        assert WebhookEvent.objects.get(event_id=f"evt_intake_{n:04d}").status == "ignored"
    assert deliver(event(0)).json()["duplicate"] is True
    assert [e.attempts for e in WebhookEvent.objects.all()] == [1, 1, 1]


@pytest.mark.django_db
def test_an_unreachable_cache_still_queues_the_drain(
    deliver: Deliver, queued: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*args: Any, **kwargs: Any) -> bool:
        raise ConnectionError("cache down")

    monkeypatch.setattr(services.cache, "add", down)
    assert deliver(event(1)).status_code == 200
    assert len(queued) == 1  # queued anyway
    assert deliver(event(2)).status_code == 200
    assert len(queued) == 1  # this process knows its drain will see the second event too
    services._drain_queued.until = 0.0  # another process, or a second later
    assert deliver(event(3)).status_code == 200
    assert len(queued) == 2


@pytest.mark.django_db
def test_a_process_that_finds_a_drain_queued_sends_nothing_until_just_before_it_starts(
    deliver: Deliver, queued: list[dict[str, Any]]
) -> None:
    deliver(event(1))  # queues the drain and records its start in the cache
    start = cache.get(services.WEBHOOK_DRAIN_KEY)
    assert queued[0]["eta"] == datetime.fromtimestamp(start, tz=UTC)
    services._drain_queued.until = 0.0  # another web process, which knows nothing yet
    deliver(event(2))  # finds the key: reads the start, queues nothing
    assert len(queued) == 1
    assert services._drain_queued.until == start - services.WEBHOOK_DRAIN_MARGIN
    cache.delete(services.WEBHOOK_DRAIN_KEY)  # the key is gone: from now on only the memory skips
    deliver(event(3))
    assert len(queued) == 1
    services.webhook_events_drain()
    assert set(WebhookEvent.objects.values_list("status", flat=True)) == {"ignored"}


def test_threads_of_a_process_arriving_together_ask_the_cache_once(
    queued: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deliveries a threaded worker handles side by side: one thread adds the drain's key (and
    queues it), the others wait for it and then find the drain queued, with no cache call."""
    calls: list[str] = []
    backend = type(caches["default"])  # each thread has its own instance of it
    real_add, real_get = backend.add, backend.get

    def add(self: Any, *args: Any, **kwargs: Any) -> bool:
        calls.append("add")
        threading.Event().wait(0.05)  # a round trip long enough for the others to arrive
        return bool(real_add(self, *args, **kwargs))

    def get(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append("get")
        return real_get(self, *args, **kwargs)

    monkeypatch.setattr(backend, "add", add)
    monkeypatch.setattr(backend, "get", get)
    threads = [threading.Thread(target=services.webhook_events_drain_schedule) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert calls == ["add"]
    assert len(queued) == 1


@pytest.mark.skipif(not POSTGRESQL, reason="row locks and server-side connection kills need PostgreSQL")
@pytest.mark.django_db(transaction=True)
def test_drains_side_by_side_skip_the_event_the_other_holds(deliver: Deliver, queued: list[dict[str, Any]]) -> None:
    for n in range(3):
        deliver(event(n))
    held = WebhookEvent.objects.get(event_id="evt_intake_0001")
    locked, release = threading.Event(), threading.Event()

    def other_drain() -> None:  # holds the row lock as a drain applying it would
        try:
            with connections["default"].cursor() as cursor:
                cursor.execute("BEGIN")
                cursor.execute("SELECT id FROM billing_webhookevent WHERE id = %s FOR UPDATE", [held.pk])
                locked.set()
                release.wait(10)
                cursor.execute("ROLLBACK")
        finally:
            connections["default"].close()

    thread = threading.Thread(target=other_drain)
    thread.start()
    try:
        assert locked.wait(10)
        services.webhook_events_drain()  # does not wait for the held row
        statuses = dict(WebhookEvent.objects.values_list("event_id", "status"))
        assert statuses == {"evt_intake_0000": "ignored", "evt_intake_0001": "received", "evt_intake_0002": "ignored"}
    finally:
        release.set()
        thread.join()
    services.webhook_events_drain()
    assert [(e.status, e.attempts) for e in WebhookEvent.objects.order_by("pk")] == [("ignored", 1)] * 3


@pytest.mark.skipif(not POSTGRESQL, reason="row locks and server-side connection kills need PostgreSQL")
@pytest.mark.django_db(transaction=True)
def test_a_connection_the_database_dropped_is_replaced_and_the_event_stored(
    deliver: Deliver, queued: list[dict[str, Any]]
) -> None:
    """The INSERT is the health check (no ``SELECT 1`` per request); a dead connection is replaced."""
    saved = {key: connection.settings_dict[key] for key in ("CONN_HEALTH_CHECKS", "CONN_MAX_AGE")}
    connection.settings_dict.update(CONN_HEALTH_CHECKS=True, CONN_MAX_AGE=60)  # production's
    connection.close()  # reconnects with them
    killer = connections.create_connection("default")
    try:
        client = Client()
        assert deliver(event(1), client=client).status_code == 200
        assert connection.health_check_enabled
        pid = connection.connection.info.backend_pid
        with killer.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        connection.health_check_done = False  # what the next request on the reused connection sees
        with CaptureQueriesContext(connection) as queries:
            assert deliver(event(2), client=client).status_code == 200
        # The INSERT sent to the dead connection, then to the new one. The first was a prepared
        # statement on the old connection, whose text psycopg does not record when it fails.
        sent = [q["sql"] for q in queries.captured_queries]
        assert len(sent) == 2 and sent[1].startswith("INSERT INTO") and sent[0] in (None, sent[1])
        assert connection.connection.info.backend_pid != pid
        assert sorted(WebhookEvent.objects.values_list("event_id", flat=True)) == ["evt_intake_0001",
                                                                                  "evt_intake_0002"]  # fmt: skip
    finally:
        killer.close()
        connection.settings_dict.update(saved)
        connection.close()


@pytest.mark.skipif(not POSTGRESQL, reason="server-side prepared statements are PostgreSQL's")
@pytest.mark.django_db(transaction=True)
def test_the_insert_is_prepared_once_per_connection(deliver: Deliver, queued: list[dict[str, Any]]) -> None:
    """Parsed and planned once (``DATABASE_PREPARE_THRESHOLD``; Django leaves psycopg's prepared
    statements off unless told), then only executed."""
    for n in range(3):
        assert deliver(event(n)).status_code == 200
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement, generic_plans + custom_plans FROM pg_prepared_statements")
        prepared = cursor.fetchall()
    assert [(sql.split(" (", 1)[0], runs) for sql, runs in prepared] == [('INSERT INTO "billing_webhookevent"', 3)]

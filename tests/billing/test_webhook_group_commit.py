"""Group commit of the webhook intake: deliveries a web process handles side by side share one INSERT.

Threads stand in for gunicorn's threaded workers. The first delivery's INSERT is held until the
others have queued behind it, so the batch they form is known; everything else runs for real on
PostgreSQL (committed rows, each thread its own connection).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import DataError, OperationalError, connection, connections

from billing.payments import webhook_store
from billing.payments.records import WebhookEvent

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql", reason="group commit is PostgreSQL's"),
    pytest.mark.django_db(transaction=True),
]

Sent = list[tuple[int, list[str]]]  # (rows in the INSERT, their event ids)
Hold = Callable[..., None]


def payload(event_id: str, note: str = "ok") -> dict[str, Any]:
    return {"id": event_id, "object": "event", "type": "customer.updated", "data": {"object": {"note": note}}}


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Sent, Hold]]:
    """Every INSERT sent (row count, event ids); ``hold(n)`` keeps the first one from going out
    until ``n`` deliveries are queued behind it."""
    record: Sent = []
    waiting = {"for": 0, "seconds": 10.0}
    real = webhook_store._execute_checked

    def execute(db: Any, statement: str, values: Any, *, many: bool = False) -> Any:
        if statement.startswith("INSERT"):
            columns = len(webhook_store._COLUMNS)
            record.append((len(values) // columns, [values[n + 1] for n in range(0, len(values), columns)]))
            if len(record) == 1 and waiting["for"]:
                for _ in range(int(waiting["seconds"] * 100)):
                    with webhook_store._group_commit._lock:
                        if len(webhook_store._group_commit._queued) >= waiting["for"]:
                            break
                    threading.Event().wait(0.01)
        return real(db, statement, values, many=many)

    def hold(queued: int, seconds: float = 10.0) -> None:
        waiting.update({"for": queued, "seconds": seconds})

    monkeypatch.setattr(webhook_store, "_execute_checked", execute)
    yield record, hold


def deliver_side_by_side(deliveries: list[dict[str, Any]]) -> list[Any]:
    """Store each delivery from its own thread (the first starts alone and leads); each result is
    ``(event id, stored id, created)`` or the exception raised."""
    results: list[Any] = [None] * len(deliveries)

    def store(index: int) -> None:
        try:
            record, created = webhook_store.webhook_event_store(
                gateway="stripe", event_id=deliveries[index]["id"], event_type="customer.updated",
                payload=deliveries[index],
            )  # fmt: skip
            results[index] = (record.event_id, record.pk, created)
        except Exception as exc:
            results[index] = exc
        finally:
            connections.close_all()

    first = threading.Thread(target=store, args=(0,))
    first.start()
    for _ in range(500):  # the first is sending (and held) before the others arrive
        if webhook_store._group_commit._sending:
            break
        threading.Event().wait(0.01)
    others = [threading.Thread(target=store, args=(n,)) for n in range(1, len(deliveries))]
    for thread in others:
        thread.start()
    for thread in [first, *others]:
        thread.join(30)
    return results


def test_deliveries_arriving_during_an_insert_share_the_next_one(sent: tuple[Sent, Hold]) -> None:
    record, hold = sent
    hold(3)
    deliveries = [payload(f"evt_group_{n}") for n in range(4)]
    results = deliver_side_by_side(deliveries)
    assert record[0] == (1, ["evt_group_0"])
    assert [(rows, sorted(ids)) for rows, ids in record[1:]] == [(3, ["evt_group_1", "evt_group_2", "evt_group_3"])]
    stored = dict(WebhookEvent.objects.values_list("event_id", "pk"))
    assert results == [(f"evt_group_{n}", stored[f"evt_group_{n}"], True) for n in range(4)]
    assert WebhookEvent.objects.get(event_id="evt_group_2").payload == deliveries[2]
    assert not webhook_store._group_commit._sending and not webhook_store._group_commit._queued


def test_two_deliveries_of_one_event_in_a_batch_store_it_once(sent: tuple[Sent, Hold]) -> None:
    record, hold = sent
    hold(3)
    results = deliver_side_by_side([payload("evt_group_a"), payload("evt_group_b"), payload("evt_group_b"),
                                    payload("evt_group_a")])  # fmt: skip
    assert [rows for rows, _ids in record] == [1, 3]
    stored = dict(WebhookEvent.objects.values_list("event_id", "pk"))
    assert sorted(stored) == ["evt_group_a", "evt_group_b"]
    assert results[0] == ("evt_group_a", stored["evt_group_a"], True)
    assert results[3] == ("evt_group_a", stored["evt_group_a"], False)  # stored by the first
    assert sorted(results[1:3], key=lambda r: r[2]) == [("evt_group_b", stored["evt_group_b"], False),
                                                        ("evt_group_b", stored["evt_group_b"], True)]  # fmt: skip


def test_a_row_the_database_refuses_fails_its_delivery_alone(sent: tuple[Sent, Hold]) -> None:
    """PostgreSQL's jsonb takes no NUL character: that delivery fails (500, the gateway delivers
    again), the others in its batch are stored."""
    record, hold = sent
    hold(3)
    bad = payload("evt_group_bad", note="nul \x00 here")
    results = deliver_side_by_side([payload("evt_group_0"), payload("evt_group_1"), bad, payload("evt_group_3")])
    assert [rows for rows, _ids in record] == [1, 3, 1, 1, 1]  # the batch, then row by row
    assert isinstance(results[2], DataError)
    assert sorted(WebhookEvent.objects.values_list("event_id", flat=True)) == ["evt_group_0", "evt_group_1",
                                                                               "evt_group_3"]  # fmt: skip
    assert all(result[2] is True for n, result in enumerate(results) if n != 2)


def test_a_delivery_that_waits_too_long_leaves_the_queue_and_is_not_stored(
    sent: tuple[Sent, Hold], monkeypatch: pytest.MonkeyPatch
) -> None:
    record, hold = sent
    monkeypatch.setattr(webhook_store, "GROUP_COMMIT_WAIT", 0.2)
    hold(99, seconds=1.0)  # the first INSERT is held longer than the other will wait
    results = deliver_side_by_side([payload("evt_group_0"), payload("evt_group_late")])
    assert isinstance(results[1], OperationalError) and "deliver it again" in str(results[1])
    assert results[0][2] is True
    assert [ids for _rows, ids in record] == [["evt_group_0"]]
    assert list(WebhookEvent.objects.values_list("event_id", flat=True)) == ["evt_group_0"]
    assert not webhook_store._group_commit._sending and not webhook_store._group_commit._queued


def test_inside_a_transaction_a_delivery_sends_its_own_insert(sent: tuple[Sent, Hold]) -> None:
    from django.db import transaction

    record, _hold = sent
    with transaction.atomic():
        stored, created = webhook_store.webhook_event_store(
            gateway="stripe", event_id="evt_group_tx", event_type="customer.updated", payload=payload("evt_group_tx")
        )
        assert not webhook_store._group_commit._sending
    assert created and record == [(1, ["evt_group_tx"])]
    assert WebhookEvent.objects.get().pk == stored.pk

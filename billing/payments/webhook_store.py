"""Storing a verified gateway event once by its id, in one statement.

``INSERT … ON CONFLICT (gateway, event_id) DO NOTHING RETURNING id`` (PostgreSQL, and SQLite from
3.35) stores a new event and says so in one round trip, committed at once (autocommit: no
transaction, no savepoint); a redelivery inserts nothing and the stored row is read. A
read-then-insert (``get_or_create``) needs a transaction, a savepoint and three more round trips
per delivery, which is most of the webhook's time in a burst (``bench/webhooks.py``). Two
deliveries of one event racing: the database lets one insert win and the other finds its row.

The payload goes in as the JSON text the gateway sent when it has it (``payload_json``), so a
delivery is parsed once and never serialized again.

Group commit (PostgreSQL): deliveries that the threads of one web process (gunicorn's threaded
workers, ``gunicorn.conf.py``) handle side by side share INSERTs. The first sends its row at once;
those arriving while that INSERT is in flight wait, then the first of them sends all their rows in
one multi-row INSERT, one commit for all (``_GroupCommit``). A delivery is still answered only once
its row is committed. A batch refused for one row's sake (a payload PostgreSQL will not take as
JSON, say) is sent again row by row, so only that delivery fails. With one thread per process, on
SQLite, or inside a transaction, each delivery sends its own INSERT.
"""

from __future__ import annotations

import copy
import functools
import json
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from django.db import DEFAULT_DB_ALIAS, DatabaseError, InterfaceError, OperationalError, connection, connections
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from billing.payments.records import WebhookEvent

_COLUMNS = ("gateway", "event_id", "type", "payload", "received_at", "processed_at", "status", "attempts", "error")
# What a redelivery reads of the stored row (in the model's field order; the rest loads if used).
_STORED = ("id", "gateway", "event_id", "type", "status", "attempts")
# How long a delivery waits for the INSERT another thread sends for it before giving up (answered
# 500, so the gateway delivers again): far above a commit's time, below gunicorn's timeout.
GROUP_COMMIT_WAIT = 20.0


@functools.cache
def _statements(vendor: str, rows: int = 1) -> tuple[str, str]:
    """The INSERT of ``rows`` events (returning the id, and for several rows the key, of each row
    it stored) and the SELECT of a redelivery's row, built once per database vendor and size."""
    quote = connection.ops.quote_name
    table = quote(WebhookEvent._meta.db_table)
    by_name = {field.name: field.column for field in WebhookEvent._meta.concrete_fields}
    row = f"({', '.join(['%s'] * len(_COLUMNS))})"
    returning = ("id",) if rows == 1 else ("id", "gateway", "event_id")
    # Identifiers come from the model's metadata; every value is a parameter.
    insert = (
        f"INSERT INTO {table} ({', '.join(quote(by_name[name]) for name in _COLUMNS)}) "  # noqa: S608
        f"VALUES {', '.join([row] * rows)} "
        f"ON CONFLICT ({quote('gateway')}, {quote('event_id')}) DO NOTHING "
        f"RETURNING {', '.join(quote(by_name[name]) for name in returning)}"
    )
    select = (
        f"SELECT {', '.join(quote(by_name[name]) for name in _STORED)} FROM {table} "  # noqa: S608
        f"WHERE {quote('gateway')} = %s AND {quote('event_id')} = %s"
    )
    return insert, select


class _Delivery:
    """One delivery's row waiting in a group commit, and what became of it."""

    __slots__ = ("done", "error", "lead", "row", "values")

    def __init__(self, values: list[Any]) -> None:
        self.values = values
        self.done = threading.Event()
        self.lead = False  # woken to send the next batch, not with a result
        self.row: tuple[Any, ...] | None = None  # (id,) when this delivery stored the event
        self.error: BaseException | None = None


class _GroupCommit:
    """Leader and followers: one thread at a time sends an INSERT; rows arriving meanwhile queue,
    and when it is done the first queued thread sends them all (its own among them) in one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queued: list[_Delivery] = []
        self._sending = False

    def store(self, values: list[Any]) -> tuple[Any, ...] | None:
        delivery = _Delivery(values)
        with self._lock:
            self._queued.append(delivery)
            delivery.lead = not self._sending
            self._sending = True
        if not delivery.lead and not delivery.done.wait(GROUP_COMMIT_WAIT):
            with self._lock:
                if delivery in self._queued and not delivery.lead:  # nothing was sent for it: leave
                    self._queued.remove(delivery)
                    raise OperationalError("The webhook event was not stored in time; deliver it again.")
            delivery.done.wait()  # in a batch being sent, or just made the next sender
        if delivery.lead:
            self._send()
        return delivery_result(delivery)

    def _send(self) -> None:
        """Send what is queued (this thread's own delivery among it), on this thread's connection,
        then make the first delivery queued meanwhile the next sender."""
        with self._lock:
            batch, self._queued = self._queued, []
        try:
            _insert_batch(connections[DEFAULT_DB_ALIAS], batch)
        finally:
            with self._lock:
                following = self._queued[0] if self._queued else None
                if following is None:
                    self._sending = False
                else:
                    following.lead = True
            for delivery in batch:
                delivery.lead = False
                delivery.done.set()
            if following is not None:
                following.done.set()


def delivery_result(delivery: _Delivery) -> tuple[Any, ...] | None:
    if delivery.error is not None:
        # Several deliveries may share one failure (the connection dropped): each raises its copy.
        raise copy.copy(delivery.error)
    return delivery.row


def _insert_batch(db: Any, batch: list[_Delivery]) -> None:
    """One INSERT for the whole batch, on the connection ``db``; each delivery gets its row (or
    None: a redelivery) or its error."""
    try:
        if len(batch) == 1:
            _insert_one(db, batch[0])
            return
        insert, _select = _statements(db.vendor, len(batch))
        stored = _execute_checked(db, insert, [value for delivery in batch for value in delivery.values], many=True)
    except (OperationalError, InterfaceError) as exc:  # the database, not a row: every delivery fails
        for delivery in batch:
            delivery.error = exc
        return
    except DatabaseError:
        # A row the database refused takes the others down with it: each on its own.
        for delivery in batch:
            _insert_one(db, delivery)
        return
    except BaseException as exc:
        for delivery in batch:
            delivery.error = exc
        raise
    ids = {(gateway, event_id): pk for pk, gateway, event_id in stored}
    for delivery in batch:  # two deliveries of one event in a batch: the first stored it
        pk = ids.pop((delivery.values[0], delivery.values[1]), None)
        delivery.row = (pk,) if pk is not None else None


def _insert_one(db: Any, delivery: _Delivery) -> None:
    insert, _select = _statements(db.vendor)
    try:
        delivery.row = _execute_checked(db, insert, delivery.values)
    except DatabaseError as exc:
        delivery.error = exc


_group_commit = _GroupCommit()


def _insert(db: Any, values: list[Any]) -> tuple[Any, ...] | None:
    """The new row's ``(id,)``, or None when the event was stored already."""
    if db.vendor == "postgresql" and not db.in_atomic_block:
        return _group_commit.store(values)
    insert, _select = _statements(db.vendor)
    return _execute_checked(db, insert, values)


def _execute_checked(db: Any, statement: str, values: Sequence[Any], *, many: bool = False) -> Any:
    """Run the INSERT as the connection's health check: on a reused connection,
    ``CONN_HEALTH_CHECKS`` costs a ``SELECT 1`` round trip before a request's first query; here
    the INSERT itself finds a dead connection (the database restarted), which is then replaced
    and the INSERT sent once more. Nothing can have been stored on a dead connection, except
    when it died between the commit and its answer: the second INSERT then finds the row and
    the event counts as a redelivery (it is processed by the next drain or the retry sweep).
    Returns the first row the statement returned, or with ``many`` all of them. ``db``: the
    connection (Django's health-check state is not in django-stubs, hence ``Any``)."""
    checked_here = (
        db.connection is not None and db.health_check_enabled and not db.health_check_done and not db.in_atomic_block
    )
    if checked_here:
        db.health_check_done = True
    try:
        if db.vendor == "postgresql" and not db.queries_logged:
            import psycopg

            if db.connection is None:
                db.ensure_connection()
            with psycopg.Cursor(db.connection) as raw, db.wrap_database_errors:
                raw.execute(statement, values, prepare=True)  # parsed and planned once per connection
                return raw.fetchall() if many else raw.fetchone()
        with _cursor(db) as cursor:
            cursor.execute(statement, values)
            return cursor.fetchall() if many else cursor.fetchone()
    except (OperationalError, InterfaceError):
        if not checked_here or db.is_usable():
            raise
        db.close()
    with _cursor(db) as cursor:
        cursor.execute(statement, values)
        return cursor.fetchall() if many else cursor.fetchone()


def _cursor(db: Any) -> CursorWrapper:
    """Django's cursor, except on PostgreSQL a server-side binding one: the payload goes as a
    parameter instead of being quoted into the SQL text by psycopg's client-side cursor (Django's
    default), half the client CPU of the INSERT (``bench/webhooks.py``)."""
    if db.vendor != "postgresql":
        return db.cursor()
    import psycopg

    db.ensure_connection()
    raw: Any = psycopg.Cursor(db.connection)  # a DB-API cursor (django-stubs say CursorWrapper)
    return db.make_debug_cursor(raw) if db.queries_logged else db.make_cursor(raw)


def webhook_event_store(
    *, gateway: str, event_id: str, event_type: str, payload: Mapping[str, Any], payload_json: str = ""
) -> tuple[WebhookEvent, bool]:
    """The stored event with this (gateway, event id), and whether this call stored it.
    ``payload_json``: ``payload`` as JSON text (the delivery's body), when the caller has it."""
    db: Any = connections[DEFAULT_DB_ALIAS]  # looked up once: each ``connection.x`` is a thread-local look-up
    received_at = timezone.now()
    status, attempts, error = WebhookEvent.Status.RECEIVED.value, 0, ""
    text = payload_json or json.dumps(payload, separators=(",", ":"))
    stamp = db.ops.adapt_datetimefield_value(received_at)
    values = [gateway, event_id, event_type, text, stamp, None, status, attempts, error]
    row = _insert(db, values)
    if row is None:
        _insert_unused, select = _statements(db.vendor)
        # A redelivery: the stored row, read without the ORM's query building (a tenth of the burst).
        with db.cursor() as cursor:
            cursor.execute(select, [gateway, event_id])
            stored = cursor.fetchone()
        if stored is None:  # deleted in between: an operator's clean-up
            return WebhookEvent.objects.get(gateway=gateway, event_id=event_id), False
        return WebhookEvent.from_db(db.alias, list(_STORED), list(stored)), False
    # As a redelivery's: the key and the state loaded, the rest (the payload) read if used.
    stored = (row[0], gateway, event_id, event_type, status, attempts)
    return WebhookEvent.from_db(db.alias, list(_STORED), list(stored)), True

"""Storing a verified gateway event once by its id, in one statement.

``INSERT … ON CONFLICT (gateway, event_id) DO NOTHING RETURNING id`` (PostgreSQL, and SQLite from
3.35) stores a new event and says so in one round trip, committed at once (autocommit: no
transaction, no savepoint); a redelivery inserts nothing and the stored row is read. A
read-then-insert (``get_or_create``) needs a transaction, a savepoint and three more round trips
per delivery, which is most of the webhook's time in a burst (``bench/webhooks.py``). Two
deliveries of one event racing: the database lets one insert win and the other finds its row.

The payload goes in as the JSON text the gateway sent when it has it (``payload_json``), so a
delivery is parsed once and never serialized again.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

from django.db import InterfaceError, OperationalError, connection
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from billing.payments.records import WebhookEvent

_COLUMNS = ("gateway", "event_id", "type", "payload", "received_at", "processed_at", "status", "attempts", "error")
# What a redelivery reads of the stored row (in the model's field order; the rest loads if used).
_STORED = ("id", "gateway", "event_id", "type", "status", "attempts")


@functools.cache
def _statements(vendor: str) -> tuple[str, str]:
    """The INSERT and the SELECT of a redelivery's row, built once per database vendor."""
    quote = connection.ops.quote_name
    table = quote(WebhookEvent._meta.db_table)
    by_name = {field.name: field.column for field in WebhookEvent._meta.concrete_fields}
    # Identifiers come from the model's metadata; every value is a parameter.
    insert = (
        f"INSERT INTO {table} ({', '.join(quote(by_name[name]) for name in _COLUMNS)}) "  # noqa: S608
        f"VALUES ({', '.join(['%s'] * len(_COLUMNS))}) "
        f"ON CONFLICT ({quote('gateway')}, {quote('event_id')}) DO NOTHING RETURNING {quote('id')}"
    )
    select = (
        f"SELECT {', '.join(quote(by_name[name]) for name in _STORED)} FROM {table} "  # noqa: S608
        f"WHERE {quote('gateway')} = %s AND {quote('event_id')} = %s"
    )
    return insert, select


def _execute_checked(statement: str, values: list[Any]) -> tuple[Any, ...] | None:
    """Run the INSERT as the connection's health check: on a reused connection,
    ``CONN_HEALTH_CHECKS`` costs a ``SELECT 1`` round trip before a request's first query; here
    the INSERT itself finds a dead connection (the database restarted), which is then replaced
    and the INSERT sent once more. Nothing can have been stored on a dead connection, except
    when it died between the commit and its answer: the second INSERT then finds the row and
    the event counts as a redelivery (it is processed by the next drain or the retry sweep)."""
    db: Any = connection  # Django's health-check state is not in django-stubs
    checked_here = (
        db.connection is not None and db.health_check_enabled and not db.health_check_done and not db.in_atomic_block
    )
    if checked_here:
        db.health_check_done = True
    try:
        if connection.vendor == "postgresql" and not connection.queries_logged:
            import psycopg

            connection.ensure_connection()
            with psycopg.Cursor(connection.connection) as raw, connection.wrap_database_errors:
                raw.execute(statement, values, prepare=True)  # parsed and planned once per connection
                return raw.fetchone()
        with _cursor() as cursor:
            cursor.execute(statement, values)
            return cursor.fetchone()
    except (OperationalError, InterfaceError):
        if not checked_here or connection.is_usable():
            raise
        connection.close()
    with _cursor() as cursor:
        cursor.execute(statement, values)
        return cursor.fetchone()


def _cursor() -> CursorWrapper:
    """Django's cursor, except on PostgreSQL a server-side binding one: the payload goes as a
    parameter instead of being quoted into the SQL text by psycopg's client-side cursor (Django's
    default), half the client CPU of the INSERT (``bench/webhooks.py``)."""
    if connection.vendor != "postgresql":
        return connection.cursor()
    import psycopg

    connection.ensure_connection()
    raw: Any = psycopg.Cursor(connection.connection)  # a DB-API cursor (django-stubs say CursorWrapper)
    return connection.make_debug_cursor(raw) if connection.queries_logged else connection.make_cursor(raw)


def webhook_event_store(
    *, gateway: str, event_id: str, event_type: str, payload: Mapping[str, Any], payload_json: str = ""
) -> tuple[WebhookEvent, bool]:
    """The stored event with this (gateway, event id), and whether this call stored it.
    ``payload_json``: ``payload`` as JSON text (the delivery's body), when the caller has it."""
    received_at = timezone.now()
    status, attempts, error = WebhookEvent.Status.RECEIVED.value, 0, ""
    text = payload_json or json.dumps(payload, separators=(",", ":"))
    stamp = connection.ops.adapt_datetimefield_value(received_at)
    values = [gateway, event_id, event_type, text, stamp, None, status, attempts, error]
    insert, select = _statements(connection.vendor)
    row = _execute_checked(insert, values)
    if row is None:
        # A redelivery: the stored row, read without the ORM's query building (a tenth of the burst).
        with connection.cursor() as cursor:
            cursor.execute(select, [gateway, event_id])
            stored = cursor.fetchone()
        if stored is None:  # deleted in between: an operator's clean-up
            return WebhookEvent.objects.get(gateway=gateway, event_id=event_id), False
        return WebhookEvent.from_db(connection.alias, list(_STORED), list(stored)), False
    record = WebhookEvent(
        id=row[0], gateway=gateway, event_id=event_id, type=event_type, payload=dict(payload),
        received_at=received_at, processed_at=None, status=status, attempts=attempts, error=error,
    )  # fmt: skip
    record._state.adding = False
    return record, True

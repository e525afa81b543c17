"""Storing a verified gateway event once by its id, in one statement.

``INSERT … ON CONFLICT (gateway, event_id) DO NOTHING RETURNING id`` (PostgreSQL, and SQLite from
3.35) stores a new event and says so in one round trip, committed at once; a redelivery inserts
nothing and the stored row is read. A read-then-insert (``get_or_create``) needs a transaction, a
savepoint and three more round trips per delivery, which is most of the webhook's time in a burst
(``bench/webhooks.py``). Two deliveries of one event racing: the database lets one insert win and
the other finds its row.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import connection

from billing.payments.records import WebhookEvent


def webhook_event_store(
    *, gateway: str, event_id: str, event_type: str, payload: Mapping[str, Any]
) -> tuple[WebhookEvent, bool]:
    """The stored event with this (gateway, event id), and whether this call stored it."""
    record = WebhookEvent(gateway=gateway, event_id=event_id, type=event_type, payload=dict(payload))
    fields = [field for field in WebhookEvent._meta.concrete_fields if not field.primary_key]
    values = [field.get_db_prep_save(field.pre_save(record, add=True), connection) for field in fields]
    quote = connection.ops.quote_name
    # Identifiers come from the model's metadata; every value is a parameter.
    statement = (
        f"INSERT INTO {quote(WebhookEvent._meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "  # noqa: S608
        f"VALUES ({', '.join(['%s'] * len(fields))}) "
        f"ON CONFLICT ({quote('gateway')}, {quote('event_id')}) DO NOTHING RETURNING {quote('id')}"
    )
    with connection.cursor() as cursor:
        cursor.execute(statement, values)
        row = cursor.fetchone()
    if row is None:
        return WebhookEvent.objects.get(gateway=gateway, event_id=event_id), False
    record.pk = row[0]
    record._state.adding = False
    return record, True

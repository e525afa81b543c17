"""Upsert normalized rows in bulk. Only new or changed rows are written, so re-syncing an
unchanged window writes nothing; the count of rows written comes from the database itself.

PostgreSQL: COPY into a temporary table, then one INSERT … ON CONFLICT DO UPDATE … WHERE the
values differ. Other databases (SQLite): the same statement with VALUES, in batches.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection, models, transaction

from providers.connectors.base import CostRow, UsageRow
from providers.models import CostRecord, UsageRecord, VendorAccount

COST_VALUE_COLUMNS = (
    "charge_period_start",
    "charge_period_end",
    "service_name",
    "charge_description",
    "project",
    "consumed_quantity",
    "consumed_unit",
    "billed_cost",
    "billing_currency",
)
USAGE_VALUE_COLUMNS = ("charge_period_start", "charge_period_end", "service_name", "project", "quantity", "unit")
KEY_COLUMNS = ("vendor_account_id", "source_key")
SQLITE_BATCH = 500


@dataclass(frozen=True)
class UpsertResult:
    read: int
    written: int


def cost_rows_upsert(*, account: VendorAccount, rows: Sequence[CostRow], now: datetime) -> UpsertResult:
    """Insert new cost rows and update changed ones for ``account``; unchanged rows are left alone."""
    values = (
        (
            r.source_key,
            r.charge_period_start,
            r.charge_period_end,
            r.service_name,
            r.charge_description,
            r.project,
            r.consumed_quantity,
            r.consumed_unit,
            r.billed_cost,
            r.billing_currency,
        )
        for r in _last_per_key(rows)
    )
    return _upsert(CostRecord, account, COST_VALUE_COLUMNS, values, read=len(rows), now=now)


def usage_rows_upsert(*, account: VendorAccount, rows: Sequence[UsageRow], now: datetime) -> UpsertResult:
    values = (
        (r.source_key, r.charge_period_start, r.charge_period_end, r.service_name, r.project, r.quantity, r.unit)
        for r in _last_per_key(rows)
    )
    return _upsert(UsageRecord, account, USAGE_VALUE_COLUMNS, values, read=len(rows), now=now)


def _last_per_key(rows: Sequence[Any]) -> list[Any]:
    # One statement may not touch a row twice; the vendor's last word for a key wins.
    return list({row.source_key: row for row in rows}.values())


def _upsert(
    model: type[models.Model],
    account: VendorAccount,
    value_columns: tuple[str, ...],
    values: Iterable[tuple[Any, ...]],
    *,
    read: int,
    now: datetime,
) -> UpsertResult:
    columns = ("organization_id", "vendor_account_id", "vendor", "source_key", *value_columns, "updated_at")
    head = (account.organization_id, account.pk, account.vendor)
    records = ((*head, *value, now) for value in values)
    table = model._meta.db_table
    quoted = ", ".join(connection.ops.quote_name(c) for c in columns)
    distinct = "IS DISTINCT FROM" if connection.vendor == "postgresql" else "IS NOT"
    changed = " OR ".join(f"{table}.{c} {distinct} excluded.{c}" for c in value_columns)
    updates = ", ".join(f"{c} = excluded.{c}" for c in (*value_columns, "updated_at"))
    conflict = f"ON CONFLICT ({', '.join(KEY_COLUMNS)}) DO UPDATE SET {updates} WHERE {changed}"
    with transaction.atomic():
        if connection.vendor == "postgresql":
            written = _upsert_postgresql(table, columns, quoted, conflict, records)
        else:
            written = _upsert_batched(model, table, columns, quoted, conflict, records)
    return UpsertResult(read=read, written=written)


def _upsert_postgresql(
    table: str, columns: tuple[str, ...], quoted: str, conflict: str, records: Iterable[tuple[Any, ...]]
) -> int:
    staging = f"_ingest_{table}"
    with connection.cursor() as cursor:
        # Table and column names come from the model, never from input.
        cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS {staging} AS SELECT {quoted} FROM {table} WITH NO DATA")  # noqa: S608
        cursor.execute(f"TRUNCATE {staging}")
        with cursor.cursor.copy(f"COPY {staging} ({quoted}) FROM STDIN") as copy:
            for record in records:
                copy.write_row(record)
        cursor.execute(f"INSERT INTO {table} ({quoted}) SELECT {quoted} FROM {staging} {conflict}")  # noqa: S608
        written = cursor.rowcount
        cursor.execute(f"TRUNCATE {staging}")
    return max(written, 0)


def _upsert_batched(
    model: type[models.Model],
    table: str,
    columns: tuple[str, ...],
    quoted: str,
    conflict: str,
    records: Iterable[tuple[Any, ...]],
) -> int:
    fields = [model._meta.get_field(c.removesuffix("_id")) for c in columns]
    placeholders = ", ".join(["%s"] * len(columns))
    sql = f"INSERT INTO {table} ({quoted}) VALUES ({placeholders}) {conflict}"  # noqa: S608
    written = 0
    batch: list[list[Any]] = []
    with connection.cursor() as cursor:
        for record in records:
            batch.append([_prep(field, value) for field, value in zip(fields, record, strict=True)])
            if len(batch) >= SQLITE_BATCH:
                cursor.executemany(sql, batch)
                written += max(cursor.rowcount, 0)
                batch = []
        if batch:
            cursor.executemany(sql, batch)
            written += max(cursor.rowcount, 0)
    return written


def _prep(field: Any, value: Any) -> Any:
    if isinstance(field, models.ForeignKey):
        return value
    return field.get_db_prep_save(value, connection)

"""Cost-row ingestion into PostgreSQL: the project's path against a per-row ORM baseline and a COPY floor.

    python bench/ingest.py [--rows N] [--sample N] [--chunk N] [--keep]

(a) project path: raw vendor dicts -> ``CostRow`` (Decimal parsing) -> ``cost_rows_upsert``, in chunks as a
    sync would, into an empty table; then the same again over the unchanged rows (the re-sync).
(b) naive baseline: the same normalization, then ``update_or_create`` per row, over a sample.
(c) floor: psycopg COPY of already-normalized tuples into a temporary table plus one INSERT … ON CONFLICT.

Needs PostgreSQL: DATABASE_URL defaults to postgres://postgres@127.0.0.1:5432/aggregator_bench, a database the
script creates when missing and drops at the end (unless --keep). Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aggregator.settings")
os.environ.setdefault("DEBUG", "1")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/aggregator_bench")

import django
import environ
import psycopg
from psycopg import sql

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, connections, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from aggregator.tenancy.models import AuditEvent, Organization  # noqa: E402
from providers.connectors.base import CostRow  # noqa: E402
from providers.ingest import COST_VALUE_COLUMNS, cost_rows_upsert  # noqa: E402
from providers.models import CostRecord  # noqa: E402
from providers.services import vendor_account_create  # noqa: E402

# DEBUG=1 only supplies the development keys; production runs without the debug cursor, which would otherwise
# time and log every one of the baseline's queries.
settings.DEBUG = False

BENCH_DATABASE = "aggregator_bench"
BENCH_ORG_SLUG = "bench-ingest"
SEED = 20260101
ONE_DAY = timedelta(days=1)
FIRST_DAY = date(2025, 1, 1)
MODELS = (
    "gpt-4o-2024-08-06", "gpt-4o-mini-2024-07-18", "gpt-4.1-2025-04-14", "gpt-4.1-mini-2025-04-14", "o3-2025-04-16",
    "o4-mini-2025-04-16", "text-embedding-3-small", "text-embedding-3-large", "gpt-image-1", "whisper-1",
)  # fmt: skip
KINDS = ("input", "output", "cached input", "batch input")
PROJECTS = tuple(f"proj_{random.Random(SEED + n).getrandbits(96):024x}" for n in range(50))


def database_prepare(url: str) -> tuple[dict[str, Any], bool]:
    """The Django settings of ``url``; refuses anything but PostgreSQL, creates the database when missing."""
    config = environ.Env.db_url_config(url)
    if config["ENGINE"] != "django.db.backends.postgresql":
        sys.exit(
            f"bench/ingest.py measures the PostgreSQL ingest path (COPY + INSERT … ON CONFLICT), but DATABASE_URL "
            f"points at {config['ENGINE'].rsplit('.', 1)[-1]}. Unset DATABASE_URL to use "
            f"postgres://postgres@127.0.0.1:5432/{BENCH_DATABASE}, or set it to another PostgreSQL database."
        )
    try:
        with psycopg.connect(**_server_params(config), dbname="postgres", autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [config["NAME"]]).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(config["NAME"])))
    except psycopg.OperationalError as exc:
        sys.exit(f"Cannot reach PostgreSQL at {config['HOST']}:{config['PORT']} as {config['USER']!r}: {exc}")
    return config, not exists


def database_drop(config: dict[str, Any]) -> None:
    with psycopg.connect(**_server_params(config), dbname="postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(config["NAME"])))


def _server_params(config: dict[str, Any]) -> dict[str, Any]:
    params = {"host": config["HOST"], "port": config["PORT"], "user": config["USER"], "password": config["PASSWORD"]}
    return {key: value for key, value in params.items() if value not in ("", None)}


# --- synthetic vendor rows (not timed) ---------------------------------------------------------------------------


def raw_rows_generate(count: int) -> list[dict[str, Any]]:
    """``count`` distinct rows shaped like a vendor's daily cost results, the same on every run."""
    rng = random.Random(SEED)
    line_items = [(model, f"{model}, {kind}") for model in MODELS for kind in KINDS]
    per_day = len(PROJECTS) * len(line_items)
    days = [(FIRST_DAY + timedelta(days=n)).isoformat() for n in range(count // per_day + 1)]
    rows = []
    for i in range(count):
        model, line_item = line_items[i % len(line_items)]
        places = rng.randint(6, 10)
        scaled = rng.randrange(10 ** (places + 3))
        rows.append(
            {
                "object": "organization.costs.result",
                "day": days[i // per_day],
                "project_id": PROJECTS[(i // len(line_items)) % len(PROJECTS)],
                "model": model,
                "line_item": line_item,
                "amount": {"value": f"{scaled // 10**places}.{scaled % 10**places:0{places}d}", "currency": "usd"},
                "quantity": str(rng.randrange(1, 50_000_000)),
                "quantity_unit": "tokens",
            }
        )
    return rows


def normalize(raw: dict[str, Any]) -> Any:
    """A raw vendor dict as a ``CostRow``, the way a connector maps it."""
    day = raw["day"]
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    project = raw["project_id"]
    line_item = raw["line_item"]
    amount = raw["amount"]
    return CostRow(
        source_key=f"cost:{day}:{project}:{line_item}",
        charge_period_start=start,
        charge_period_end=start + ONE_DAY,
        billed_cost=Decimal(amount["value"]),
        billing_currency=amount["currency"].upper(),
        service_name=raw["model"],
        charge_description=line_item,
        project=project,
        consumed_quantity=Decimal(raw["quantity"]),
        consumed_unit=raw["quantity_unit"],
    )


# --- the three ways in -----------------------------------------------------------------------------------------


def project_path(account: Any, raw: Sequence[dict[str, Any]], chunk: int) -> tuple[float, int]:
    """(a): normalize and ``cost_rows_upsert`` chunk by chunk, as a sync does. Returns (seconds, rows written)."""
    written = 0
    start = time.perf_counter()
    for offset in range(0, len(raw), chunk):
        rows = [normalize(r) for r in raw[offset : offset + chunk]]
        written += cost_rows_upsert(account=account, rows=rows, now=timezone.now()).written
    return time.perf_counter() - start, written


def naive_path(account: Any, raw: Sequence[dict[str, Any]]) -> float:
    """(b): the same normalization, then one ``update_or_create`` per row."""
    start = time.perf_counter()
    for r in raw:
        row = normalize(r)
        CostRecord.objects.update_or_create(
            vendor_account=account,
            source_key=row.source_key,
            defaults={
                "organization_id": account.organization_id,
                "vendor": account.vendor,
                **{column: getattr(row, column) for column in COST_VALUE_COLUMNS},
                "updated_at": timezone.now(),
            },
        )
    return time.perf_counter() - start


def floor_path(records: Sequence[tuple[Any, ...]]) -> tuple[float, int]:
    """(c): COPY already-normalized tuples into a temporary table, then one INSERT … ON CONFLICT."""
    columns = ("organization_id", "vendor_account_id", "vendor", "source_key", *COST_VALUE_COLUMNS, "updated_at")
    table = sql.Identifier(CostRecord._meta.db_table)
    staging = sql.Identifier("_bench_floor")
    names = sql.SQL(", ").join(map(sql.Identifier, columns))
    updates = sql.SQL(", ").join(
        sql.SQL("{0} = excluded.{0}").format(sql.Identifier(c)) for c in (*COST_VALUE_COLUMNS, "updated_at")
    )
    start = time.perf_counter()
    with transaction.atomic(), connection.cursor() as wrapper:
        cursor = wrapper.cursor
        cursor.execute(
            sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
                staging, names, table
            )
        )
        with cursor.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(staging, names)) as copy:
            for record in records:
                copy.write_row(record)
        cursor.execute(
            sql.SQL(
                "INSERT INTO {table} ({names}) SELECT {names} FROM {staging} "
                "ON CONFLICT (vendor_account_id, source_key) DO UPDATE SET {updates}"
            ).format(table=table, names=names, staging=staging, updates=updates)
        )
        written = cursor.rowcount
    return time.perf_counter() - start, written


# --- set-up, housekeeping, report -------------------------------------------------------------------------------


def bench_account_create() -> Any:
    """A fresh organization and OpenAI account for this run, after removing those of earlier runs."""
    previous = Organization.objects.filter(slug=BENCH_ORG_SLUG)
    CostRecord.objects.filter(organization__in=previous).delete()
    AuditEvent.objects.filter(organization__in=previous).delete()
    previous.delete()
    organization = Organization.objects.create(slug=BENCH_ORG_SLUG, name="Ingest benchmark", currency="USD")
    return vendor_account_create(
        organization=organization,
        vendor="openai",
        label="OpenAI bench",
        credentials={"admin_key": "sk-admin-FAKE-bench-0000000000"},
    )


def table_empty(account: Any) -> None:
    """Empty the cost table (TRUNCATE: a fresh heap and indexes for each timed phase) and checkpoint, so that
    no phase pays for the previous one's dirty pages."""
    if CostRecord.objects.exclude(organization_id=account.organization_id).exists():
        sys.exit(
            "The cost table holds rows of other organizations; the benchmark truncates it between phases. "
            f"Point DATABASE_URL at a database of its own (default: {BENCH_DATABASE})."
        )
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {CostRecord._meta.db_table}")
    checkpoint()


def checkpoint() -> None:
    with connection.cursor() as cursor:
        cursor.execute("CHECKPOINT")


def rate(rows: int, seconds: float) -> float:
    return rows / seconds if seconds > 0 else float("inf")


def line(label: str, rows: int, seconds: float, extra: str = "") -> None:
    print(f"{label:<52} {rows:>10,} rows in {seconds:8.2f} s = {rate(rows, seconds):>9,.0f} rows/s{extra}")


def verdict(met: bool) -> str:
    return "goal met" if met else "goal missed"


def step(message: str, action: Callable[[], Any]) -> Any:
    print(f"  … {message}", end="", flush=True)
    start = time.perf_counter()
    result = action()
    print(f" ({time.perf_counter() - start:.1f} s, not timed)", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows for (a), (c) and the re-sync")
    parser.add_argument("--sample", type=int, default=20_000, help="rows for the per-row ORM baseline (b)")
    parser.add_argument("--chunk", type=int, default=50_000, help="rows per cost_rows_upsert call, as a sync")
    parser.add_argument("--keep", action="store_true", help=f"keep the {BENCH_DATABASE} database afterwards")
    args = parser.parse_args()
    if args.rows < 1 or args.sample < 1 or args.chunk < 1:
        parser.error("--rows, --sample and --chunk must be at least 1")
    sample = min(args.sample, args.rows)
    if sample < args.sample:
        print(f"--sample {args.sample:,} is more than --rows: the baseline uses {sample:,} rows.")

    config, created = database_prepare(os.environ["DATABASE_URL"])
    try:
        run(args.rows, sample, args.chunk)
    finally:
        connections.close_all()
        if not args.keep and (created or config["NAME"] == BENCH_DATABASE):
            database_drop(config)
            print(f"Dropped database {config['NAME']} (--keep keeps it).")
        else:
            print(f"Left database {config['NAME']} in place.")


def run(rows: int, sample: int, chunk: int) -> None:
    step("migrate", lambda: call_command("migrate", verbosity=0))
    account = step("organization and vendor account", bench_account_create)
    raw = step(f"generate {rows:,} synthetic vendor rows", lambda: raw_rows_generate(rows))
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        server = cursor.fetchone()[0]
    print(
        f"Cost-row ingest into PostgreSQL {server}: {rows:,} rows, cost_rows_upsert chunks of {chunk:,}, "
        f"ORM baseline over {sample:,} rows."
    )

    # (b) first: it needs an empty table, like the others, and is the smallest.
    table_empty(account)
    naive_s = naive_path(account, raw[:sample])
    line("(b) naive: update_or_create per row", sample, naive_s)

    table_empty(account)
    now = timezone.now()
    head = (account.organization_id, account.pk, account.vendor)
    records = step(
        "normalize rows for the floor",
        lambda: [
            (*head, *(getattr(row, c) for c in ("source_key", *COST_VALUE_COLUMNS)), now) for row in map(normalize, raw)
        ],
    )
    floor_s, floor_written = floor_path(records)
    line("(c) floor: COPY + one INSERT … ON CONFLICT", rows, floor_s, f"; written {floor_written:,}")
    del records

    table_empty(account)
    first_s, first_written = project_path(account, raw, chunk)
    line("(a) project: normalize + cost_rows_upsert", rows, first_s, f"; written {first_written:,}")

    # Between two hourly syncs autovacuum has visited the table; do it now rather than in the timed re-sync.
    step("VACUUM (ANALYZE) the cost table", vacuum)
    checkpoint()
    resync_s, resync_written = project_path(account, raw, chunk)
    line("re-sync: (a) again over the unchanged rows", rows, resync_s, f"; written {resync_written:,}")

    a, b, c = rate(rows, first_s), rate(sample, naive_s), rate(rows, floor_s)
    resync_ratio = resync_s / first_s
    print(f"rows written by the re-sync: {resync_written:,} (expected 0: {'ok' if resync_written == 0 else 'NOT 0'})")
    print(f"re-sync / first sync time: {resync_ratio:.2f} (goal ≤ 0.5: {verdict(resync_ratio <= 0.5)})")
    print(f"a/c (project / floor throughput): {a / c:.2f} (goal ≥ 0.5: {verdict(a / c >= 0.5)})")
    print(f"a/b (project / naive throughput): x{a / b:,.1f} (goal ≥ 20: {verdict(a / b >= 20)})")


def vacuum() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM (ANALYZE) {CostRecord._meta.db_table}")


if __name__ == "__main__":
    main()

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
import contextlib
import functools
import os
import random
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aggregator.settings")
os.environ.setdefault("DEBUG", "1")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/aggregator_bench")

import django
from psycopg import sql

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import DatabaseError, connection, connections, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from aggregator.tenancy.models import AuditEvent, Organization  # noqa: E402
from bench._infra import database_drop, database_prepare, step, verdict  # noqa: E402
from providers.connectors.base import CostRow  # noqa: E402
from providers.ingest import COST_VALUE_COLUMNS, cost_rows_upsert  # noqa: E402
from providers.models import CostRecord  # noqa: E402
from providers.services import vendor_account_create  # noqa: E402

# DEBUG=1 only supplies the development keys; production runs without the debug cursor, which would otherwise
# time and log every one of the baseline's queries.
settings.DEBUG = False

BENCH_DATABASE = "aggregator_bench"
PURPOSE = "bench/ingest.py measures the PostgreSQL ingest path (COPY + INSERT … ON CONFLICT)"
BENCH_ORG_SLUG = "bench-ingest"
SEED = 20260101
ANALYZE_EVERY = 1_000
ONE_DAY = timedelta(days=1)
FIRST_DAY = date(2025, 1, 1)
MODELS = (
    "gpt-4o-2024-08-06", "gpt-4o-mini-2024-07-18", "gpt-4.1-2025-04-14", "gpt-4.1-mini-2025-04-14", "o3-2025-04-16",
    "o4-mini-2025-04-16", "text-embedding-3-small", "text-embedding-3-large", "gpt-image-1", "whisper-1",
)  # fmt: skip
KINDS = ("input", "output", "cached input", "batch input")
PROJECTS = tuple(f"proj_{random.Random(SEED + n).getrandbits(96):024x}" for n in range(50))


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
    start, end = _bucket(day)
    project = raw["project_id"]
    line_item = raw["line_item"]
    amount = raw["amount"]
    return CostRow(
        source_key=f"cost:{day}:{project}:{line_item}",
        charge_period_start=start,
        charge_period_end=end,
        billed_cost=Decimal(amount["value"]),
        billing_currency=amount["currency"].upper(),
        service_name=raw["model"],
        charge_description=line_item,
        project=project,
        consumed_quantity=Decimal(raw["quantity"]),
        consumed_unit=raw["quantity_unit"],
    )


@functools.cache
def _bucket(day: str) -> tuple[datetime, datetime]:
    # A connector parses a bucket's bounds once for all the bucket's results, not once per result.
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    return start, start + ONE_DAY


class Stopwatch:
    """Wall time, plus the CPU time of this process and, when PostgreSQL runs on this machine, of its backend:
    CPU time suffers less than wall time from other work on the machine. Accumulates over ``with`` blocks."""

    def __init__(self, backend_stat: str | None) -> None:
        self.backend_stat = backend_stat
        self.wall = self.client = 0.0
        self.server: float | None = 0.0 if backend_stat else None

    def _server_now(self) -> float:
        if not self.backend_stat:
            return 0.0
        try:
            with open(self.backend_stat) as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:  # the backend went away: report client CPU only
            self.backend_stat, self.server = None, None
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def __enter__(self) -> Stopwatch:
        self._start: tuple[float, ...] = (time.perf_counter(), time.process_time(), self._server_now())
        return self

    def __exit__(self, *exc: object) -> None:
        wall, client, server = self._start
        self.wall += time.perf_counter() - wall
        self.client += time.process_time() - client
        if self.server is not None:
            self.server += self._server_now() - server

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Inside a ``with`` block of this stopwatch: leave out what runs here."""
        before = (time.perf_counter(), time.process_time(), self._server_now())
        yield
        after = (time.perf_counter(), time.process_time(), self._server_now())
        self._start = tuple(start + a - b for start, a, b in zip(self._start, after, before, strict=True))

    @property
    def cpu(self) -> float:
        return self.client + (self.server or 0.0)

    def describe(self) -> str:
        server = "" if self.server is None else f" + server {self.server:.1f} s"
        return f"CPU client {self.client:.1f} s{server}"


def backend_stat_path(config: dict[str, Any]) -> str | None:
    """/proc/<pid>/stat of this connection's PostgreSQL backend, when the server runs on this machine."""
    if str(config["HOST"]) not in ("", "localhost", "127.0.0.1", "::1") and not str(config["HOST"]).startswith("/"):
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    try:
        with open(f"/proc/{pid}/comm") as comm:
            return f"/proc/{pid}/stat" if comm.read().startswith("postgres") else None
    except OSError:
        return None


# --- the three ways in -----------------------------------------------------------------------------------------


def project_path(account: Any, raw: Sequence[dict[str, Any]], chunk: int, watch: Stopwatch) -> int:
    """(a): normalize and ``cost_rows_upsert`` chunk by chunk, as a sync does. Returns the rows written."""
    written = 0
    with watch:
        for offset in range(0, len(raw), chunk):
            rows = [normalize(r) for r in raw[offset : offset + chunk]]
            written += cost_rows_upsert(account=account, rows=rows, now=timezone.now()).written
    return written


def naive_path(account: Any, raw: Sequence[dict[str, Any]], chunk: int, watch: Stopwatch) -> None:
    """(b): the same normalization, then one ``update_or_create`` per row. It commits once per chunk, like (a), so
    that it pays for a round trip per row, not for an fsync per row. Every ``ANALYZE_EVERY`` rows the table is
    analyzed, not timed, as autovacuum keeps a live table's statistics: on a never-analyzed table the planner
    serves ``update_or_create``'s lookup from the single-column vendor_account_id index, scanning all the account's
    rows each time, and the baseline would turn quadratic."""
    for offset in range(0, len(raw), chunk):
        with watch, transaction.atomic():
            for done, r in enumerate(raw[offset : offset + chunk], start=1):
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
                if done % ANALYZE_EVERY == 0:
                    with watch.paused():
                        analyze()


def floor_path(records: Sequence[tuple[Any, ...]], watch: Stopwatch) -> int:
    """(c): COPY already-normalized tuples into a temporary table, then one INSERT … ON CONFLICT."""
    columns = ("organization_id", "vendor_account_id", "vendor", "source_key", *COST_VALUE_COLUMNS, "updated_at")
    table = sql.Identifier(CostRecord._meta.db_table)
    staging = sql.Identifier("_bench_floor")
    names = sql.SQL(", ").join(map(sql.Identifier, columns))
    updates = sql.SQL(", ").join(
        sql.SQL("{0} = excluded.{0}").format(sql.Identifier(c)) for c in (*COST_VALUE_COLUMNS, "updated_at")
    )
    with watch, transaction.atomic(), connection.cursor() as wrapper:
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
    return written


# --- set-up, housekeeping, report -------------------------------------------------------------------------------


def bench_rows_remove() -> None:
    """The organization, account, cost and audit rows of earlier runs."""
    previous = Organization.objects.filter(slug=BENCH_ORG_SLUG)
    CostRecord.objects.filter(organization__in=previous).delete()
    AuditEvent.objects.filter(organization__in=previous).delete()
    previous.delete()


def bench_account_create() -> Any:
    """A fresh organization and OpenAI account for this run, after removing those of earlier runs."""
    bench_rows_remove()
    organization = Organization.objects.create(slug=BENCH_ORG_SLUG, name="Ingest benchmark", currency="USD")
    return vendor_account_create(
        organization=organization,
        vendor="openai",
        label="OpenAI bench",
        credentials={"admin_key": "sk-admin-FAKE-bench-0000000000"},
    )


def foreign_rows_refuse() -> None:
    if CostRecord.objects.exclude(organization__slug=BENCH_ORG_SLUG).exists():
        sys.exit(
            "The cost table holds rows of other organizations, and the benchmark truncates it between phases: "
            f"point DATABASE_URL at a database of its own (default: {BENCH_DATABASE})."
        )


def table_empty() -> None:
    """Empty the cost table (TRUNCATE: a fresh heap and indexes for each timed phase) and checkpoint, so that
    no phase pays for the previous one's dirty pages."""
    foreign_rows_refuse()
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {CostRecord._meta.db_table}")
    checkpoint()


def checkpoint() -> None:
    with connection.cursor() as cursor:
        cursor.execute("CHECKPOINT")


def rate(rows: int, seconds: float) -> float:
    return rows / seconds if seconds > 0 else float("inf")


def line(label: str, rows: int, watch: Stopwatch, extra: str = "") -> None:
    print(
        f"{label:<44} {rows:>9,} rows in {watch.wall:7.2f} s = {rate(rows, watch.wall):>7,.0f} rows/s"
        f"{extra}; {watch.describe()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows for (a), (c) and the re-sync")
    parser.add_argument("--sample", type=int, default=20_000, help="rows for the per-row ORM baseline (b)")
    parser.add_argument("--chunk", type=int, default=50_000, help="rows per cost_rows_upsert call, as a sync")
    parser.add_argument("--keep", action="store_true", help=f"keep the {BENCH_DATABASE} database afterwards")
    args = parser.parse_args()
    if args.rows < 1 or args.sample < 1 or args.chunk < 1:
        parser.error("--rows, --sample and --chunk must be at least 1")
    config, created = database_prepare(os.environ["DATABASE_URL"], purpose=PURPOSE, default_name=BENCH_DATABASE)
    sample = min(args.sample, args.rows)
    if sample < args.sample:
        print(f"--sample {args.sample:,} is more than --rows: the baseline uses {sample:,} rows.")
    try:
        run(config, args.rows, sample, args.chunk)
    finally:
        cleanup(config, drop=not args.keep and (created or config["NAME"] == BENCH_DATABASE), keep=args.keep)


def cleanup(config: dict[str, Any], *, drop: bool, keep: bool) -> None:
    """Drop the benchmark's database; in a database it did not create, remove only its own rows."""
    if keep:
        print(f"Kept database {config['NAME']} (--keep).")
    elif drop:
        connections.close_all()
        database_drop(config)
        print(f"Dropped database {config['NAME']} (--keep keeps it).")
    else:
        try:
            bench_rows_remove()
        except DatabaseError as exc:
            print(f"Could not remove the benchmark's organization {BENCH_ORG_SLUG!r} from {config['NAME']}: {exc}")
        else:
            print(f"Removed the benchmark's organization and rows; left database {config['NAME']} in place.")


def run(config: dict[str, Any], rows: int, sample: int, chunk: int) -> None:
    step("migrate", lambda: call_command("migrate", verbosity=0))
    foreign_rows_refuse()
    account = step("organization and vendor account", bench_account_create)
    raw = step(f"generate {rows:,} synthetic vendor rows", lambda: raw_rows_generate(rows))
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        server = cursor.fetchone()[0]
    print(
        f"Cost-row ingest into PostgreSQL {server}: {rows:,} rows, cost_rows_upsert chunks of {chunk:,}, "
        f"ORM baseline over {sample:,} rows; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}."
    )

    stat = backend_stat_path(config)
    # (b) first: it needs an empty table, like the others, and is the smallest.
    table_empty()
    naive = Stopwatch(stat)
    naive_path(account, raw[:sample], chunk, naive)
    line("(b) naive: update_or_create per row", sample, naive)

    table_empty()
    now = timezone.now()
    head = (account.organization_id, account.pk, account.vendor)
    records = step(
        "normalize rows for the floor",
        lambda: [
            (*head, *(getattr(row, c) for c in ("source_key", *COST_VALUE_COLUMNS)), now) for row in map(normalize, raw)
        ],
    )
    floor = Stopwatch(stat)
    floor_written = floor_path(records, floor)
    line("(c) floor: COPY + one INSERT … ON CONFLICT", rows, floor, f"; written {floor_written:,}")
    del records

    table_empty()
    first = Stopwatch(stat)
    first_written = project_path(account, raw, chunk, first)
    line("(a) project: normalize + cost_rows_upsert", rows, first, f"; written {first_written:,}")

    # Between two hourly syncs autovacuum has visited the table; do it now rather than in the timed re-sync.
    step("VACUUM (ANALYZE) the cost table", vacuum)
    checkpoint()
    again = Stopwatch(stat)
    resync_written = project_path(account, raw, chunk, again)
    line("re-sync: (a) again, rows unchanged", rows, again, f"; written {resync_written:,}")

    resync = again.wall / first.wall
    a_c = rate(rows, first.wall) / rate(rows, floor.wall)
    a_b = rate(rows, first.wall) / rate(sample, naive.wall)
    cpu = "client + server" if stat else "client"
    print(f"rows written by the re-sync: {resync_written:,} (expected 0: {'ok' if resync_written == 0 else 'NOT 0'})")
    print(
        f"re-sync / first sync time: {resync:.2f} (goal ≤ 0.5: {verdict(resync <= 0.5)}); "
        f"in CPU time ({cpu}): {again.cpu / first.cpu:.2f}"
    )
    print(
        f"a/c (project / floor throughput): {a_c:.2f} (goal ≥ 0.5: {verdict(a_c >= 0.5)}); "
        f"in CPU time: {floor.cpu / first.cpu:.2f}"
    )
    print(
        f"a/b (project / naive throughput): x{a_b:,.1f} (goal ≥ 20: {verdict(a_b >= 20)}); "
        f"in CPU time: x{naive.cpu / sample * rows / first.cpu:,.1f}"
    )
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (other work on the machine skews wall times most)")


def vacuum() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM (ANALYZE) {CostRecord._meta.db_table}")


def analyze() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {CostRecord._meta.db_table}")


if __name__ == "__main__":
    main()

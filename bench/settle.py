"""Settlement throughput with real Celery workers on PostgreSQL + Redis: one worker, two workers, and re-settling.

    python bench/settle.py [--accounts N] [--days N] [--pool prefork|solo] [--keep]

Data (not timed): ``--accounts`` OpenAI accounts, 4 per organization (organizations in USD, so no exchange rate
is involved), each with ``--days`` days of cost rows ending yesterday, 3 line items a day, written with
``cost_rows_upsert``.

Run A: one worker process (``celery -A aggregator worker -Q settlement --concurrency 1``) settles every account:
one ``settle_vendor_account_task`` per account, enqueued in the order the daily ``settle_all`` task uses, timed
from the first enqueue until every account's ``settled_at`` is set. The ledger tables are then truncated and the
watermarks reset, and run B does the same with two worker processes of concurrency 1 each (goal: B/A ≥ 1.7).

Re-settle: with the ledger full after run B, every account's ``settled_at`` is reset to NULL and the same tasks
run again on one worker, so ``settle_vendor_account`` re-settles every day through the very path of run A (task,
flow, per-day transaction, alerts) and the ratio to run A isolates what an unchanged day costs: it posts nothing,
so what remains is the lock and the two reads per day (goal: re-settle / run A ≤ 0.2).

Needs PostgreSQL and Redis: DATABASE_URL defaults to postgres://postgres@127.0.0.1:5432/aggregator_bench_settle,
a database the script creates when missing and drops at the end (unless --keep); CELERY_BROKER_URL defaults to
redis://127.0.0.1:6379/15, a Redis database of its own that the script flushes at the start. The bench and its
workers run with DEBUG=1. Timings are printed, never asserted. Quick mode: --accounts 100 --days 30.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aggregator.settings")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/aggregator_bench_settle")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
os.environ["DEBUG"] = "1"
# The tasks must go through the broker to the workers, whatever a local .env says.
os.environ["CELERY_TASK_ALWAYS_EAGER"] = "0"

import django
import redis

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, connections, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from aggregator.celery import app as celery_app  # noqa: E402
from aggregator.tenancy.models import Organization  # noqa: E402
from bench._infra import (  # noqa: E402
    CpuWatch,
    broker_prepare,
    database_drop,
    database_prepare,
    load_average,
    step,
    verdict,
    workers_stop,
)
from billing.alerts.models import Alert  # noqa: E402
from billing.ledger.models import LedgerAccount, LedgerEntry, LedgerTransaction  # noqa: E402
from billing.ledger.tasks import settle_vendor_account_task  # noqa: E402
from providers import credentials as vault  # noqa: E402
from providers.connectors.base import CostRow  # noqa: E402
from providers.ingest import cost_rows_upsert  # noqa: E402
from providers.models import CostRecord, VendorAccount  # noqa: E402

# The bench process only enqueues and polls; its own query log would just grow. The workers keep DEBUG=1.
settings.DEBUG = False

ROOT = Path(__file__).resolve().parent.parent
BENCH_DATABASE = "aggregator_bench_settle"
DEFAULT_BROKER = "redis://127.0.0.1:6379/15"  # CELERY_BROKER_URL unless set
PURPOSE = (
    "bench/settle.py measures settlement by concurrent workers on PostgreSQL (row locks, the append-only ledger "
    "triggers)"
)
SEED = 20260201
ACCOUNTS_PER_ORG = 4
ORG_SLUG_PREFIX = "bench-settle-"
LINE_ITEMS = (
    ("gpt-4o-2024-08-06", "gpt-4o-2024-08-06, input"),
    ("gpt-4o-2024-08-06", "gpt-4o-2024-08-06, output"),
    ("gpt-4o-mini-2024-07-18", "gpt-4o-mini-2024-07-18, input"),
)
FEE_PERCENT = Decimal("5.000")
ADMIN_KEY = "sk-admin-FAKE-bench-0000"
QUEUE = "settlement"
POLL_SECONDS = 0.1
STALL_SECONDS = 180.0
WORKER_READY_SECONDS = 90.0
WORKER_LOG_TAIL = 3000


# --- data (not timed) ---------------------------------------------------------------------------------------------


def bench_data_create(accounts: int, days: int) -> list[int]:
    """Organizations, vendor accounts and their cost rows; returns the account ids in ``settle_all`` order."""
    others = Organization.objects.exclude(slug__startswith=ORG_SLUG_PREFIX)
    if others.exists():
        sys.exit(
            "The database holds organizations the bench did not create, and the bench truncates the ledger between "
            f"runs. Point DATABASE_URL at a database of its own (default: {BENCH_DATABASE})."
        )
    with connection.cursor() as cursor:
        # Whatever a previous --keep run left (TRUNCATE also bypasses the ledger's append-only row triggers).
        cursor.execute(f"TRUNCATE {Organization._meta.db_table} CASCADE")
    token = vault.encrypt({"admin_key": ADMIN_KEY})
    organizations = Organization.objects.bulk_create(
        Organization(
            slug=f"{ORG_SLUG_PREFIX}{n:05d}", name=f"Settlement bench {n}", currency="USD", fee_percent=FEE_PERCENT
        )
        for n in range(-(-accounts // ACCOUNTS_PER_ORG))
    )
    VendorAccount.objects.bulk_create(
        VendorAccount(
            organization=organizations[n // ACCOUNTS_PER_ORG],
            vendor="openai",
            label=f"OpenAI {n % ACCOUNTS_PER_ORG + 1}",
            credentials_encrypted=token,
            credentials_masked={"admin_key": vault.mask(ADMIN_KEY)},
        )
        for n in range(accounts)
    )
    rng = random.Random(SEED)
    first = timezone.now().date() - timedelta(days=days)
    bounds = []
    for n in range(days):
        start = datetime.combine(first + timedelta(days=n), datetime.min.time(), tzinfo=UTC)
        bounds.append((start.date().isoformat(), start, start + timedelta(days=1)))
    now = timezone.now()
    everyone = list(VendorAccount.objects.order_by("pk"))
    for offset in range(0, len(everyone), 100):
        with transaction.atomic():
            for account in everyone[offset : offset + 100]:
                rows = [
                    CostRow(
                        source_key=f"cost:{day}::{item}",
                        charge_period_start=start,
                        charge_period_end=end,
                        billed_cost=Decimal(rng.randrange(1, 20_000_000)).scaleb(-6),
                        billing_currency="USD",
                        service_name=model,
                        charge_description=item,
                        consumed_quantity=Decimal(rng.randrange(1, 5_000_000)),
                        consumed_unit="tokens",
                    )
                    for day, start, end in bounds
                    for model, item in LINE_ITEMS
                ]
                cost_rows_upsert(account=account, rows=rows, now=now)
    sql_run(f"VACUUM (ANALYZE) {CostRecord._meta.db_table}", f"VACUUM (ANALYZE) {VendorAccount._meta.db_table}")
    # The order of billing.ledger.tasks.settle_all (the model's ordering: vendor, label).
    return list(VendorAccount.objects.exclude(status=VendorAccount.Status.DISABLED).values_list("pk", flat=True))


def ledger_reset() -> None:
    """An empty ledger and no watermark: the next run settles every day from scratch."""
    tables = ", ".join(m._meta.db_table for m in (LedgerEntry, LedgerTransaction, LedgerAccount, Alert))
    sql_run(f"TRUNCATE {tables} CASCADE")
    watermarks_reset()


def watermarks_reset() -> None:
    VendorAccount.objects.update(settled_at=None)
    sql_run(f"VACUUM (ANALYZE) {VendorAccount._meta.db_table}", "CHECKPOINT")


def ledger_vacuum() -> None:
    """What autovacuum does between two daily settlements, done before the timed re-settle rather than in it."""
    sql_run(*(f"VACUUM (ANALYZE) {m._meta.db_table}" for m in (LedgerEntry, LedgerTransaction, LedgerAccount, Alert)))


def sql_run(*statements: str) -> None:
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


# --- workers -----------------------------------------------------------------------------------------------------


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-WORKER_LOG_TAIL:]


def workers_start(count: int, pool: str, folder: Path, run: str) -> list[Worker]:
    env = {
        **os.environ,
        "DEBUG": "1",
        "DATABASE_URL": os.environ["DATABASE_URL"],
        "CELERY_BROKER_URL": os.environ["CELERY_BROKER_URL"],
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "DJANGO_SETTINGS_MODULE": "aggregator.settings",
        "PYTHONPATH": str(ROOT),
        "LOG_LEVEL": "WARNING",
    }
    workers = []
    for n in range(1, count + 1):
        name = f"bench-settle-{run}{n}@{socket.gethostname()}"
        log = folder / f"worker-{run}{n}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(  # noqa: S603 (fixed arguments, the interpreter running this script)
                [
                    sys.executable, "-m", "celery", "-A", "aggregator", "worker",
                    "-Q", QUEUE, "--pool", pool, "--concurrency", "1", "--loglevel", "WARNING", "-n", name,
                    "--without-gossip", "--without-mingle", "--without-heartbeat",
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        workers.append(Worker(name, process, log))
    deadline = time.monotonic() + WORKER_READY_SECONDS
    waiting = {w.name for w in workers}
    while waiting:
        for worker in workers:
            if worker.process.poll() is not None:
                workers_stop(workers)
                sys.exit(f"Worker {worker.name} exited with {worker.process.returncode}:\n{worker.tail()}")
        replies = celery_app.control.ping(destination=sorted(waiting), timeout=0.5)
        waiting -= {name for reply in replies for name in reply}
        if waiting and time.monotonic() > deadline:
            workers_stop(workers)
            sys.exit(f"Workers {sorted(waiting)} did not answer within {WORKER_READY_SECONDS:.0f} s.")
    return workers


# --- one timed run -------------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    label: str
    workers: int
    accounts: int
    seconds: float
    enqueue_seconds: float
    cpu: dict[str, float]
    per_worker: list[float]  # CPU seconds of each worker process
    system_busy: float
    load_before: float
    load_after: float

    @property
    def rate(self) -> float:
        return self.accounts / self.seconds if self.seconds > 0 else float("inf")

    @property
    def bench_cpu(self) -> float:
        """CPU seconds of the workers and of the bench database's PostgreSQL backends: the work itself."""
        return self.cpu["workers"] + self.cpu["pg_bench"]

    @property
    def cpu_rate(self) -> float:
        """Accounts per CPU second of the work itself: what other work on the machine skews least."""
        return self.accounts / self.bench_cpu if self.bench_cpu > 0 else float("inf")

    @property
    def others_cores(self) -> float:
        """Cores taken on average by processes outside the bench (other databases included)."""
        return (self.cpu["other"] + self.cpu["pg_rest"]) / self.seconds


def settle_run(label: str, workers: int, account_ids: Sequence[int], pool: str, folder: Path, run: str) -> RunResult:
    """Start ``workers`` worker processes, enqueue one task per account, wait for every watermark, stop them."""
    if VendorAccount.objects.filter(settled_at__isnull=False).exists():
        raise RuntimeError("settled_at must be NULL on every account before a run")
    started = workers_start(workers, pool, folder, run)
    try:
        cpu = CpuWatch(started, database=str(connection.settings_dict["NAME"]))
        start = time.perf_counter()
        for account_id in account_ids:
            settle_vendor_account_task.delay(account_id)
        enqueued = time.perf_counter() - start
        settled_wait(len(account_ids), started, cpu)
        seconds = time.perf_counter() - start
        shares, busy = cpu.shares()
        per_worker = cpu.per_worker()
    finally:
        workers_stop(started)
    return RunResult(
        label=label,
        workers=workers,
        accounts=len(account_ids),
        seconds=seconds,
        enqueue_seconds=enqueued,
        cpu=shares,
        per_worker=per_worker,
        system_busy=busy,
        load_before=cpu.load_before,
        load_after=load_average(),
    )


def settled_wait(expected: int, workers: Sequence[Worker], cpu: CpuWatch) -> None:
    """Poll until every account's ``settled_at`` is set; give up when nothing moves for STALL_SECONDS."""
    pending = VendorAccount.objects.filter(settled_at__isnull=True)
    last, moved = expected, time.monotonic()
    while (left := pending.count()) > 0:
        now = time.monotonic()
        if left != last:
            last, moved = left, now
        dead = [w for w in workers if w.process.poll() is not None]
        if dead or now - moved > STALL_SECONDS:
            why = f"worker {dead[0].name} exited" if dead else f"no account settled for {STALL_SECONDS:.0f} s"
            logs = "\n".join(f"--- {w.name}\n{w.tail()}" for w in workers)
            raise RuntimeError(f"{left} of {expected} accounts unsettled: {why}.\n{logs}")
        cpu.sample()
        time.sleep(POLL_SECONDS)


# --- report -------------------------------------------------------------------------------------------------------


def ledger_counts() -> tuple[int, int]:
    return LedgerTransaction.objects.count(), LedgerEntry.objects.count()


def line(result: RunResult, account_days: int) -> None:
    per_day = result.seconds / account_days * 1e3 * result.workers
    print(
        f"{result.label:<40} {result.accounts:>6,} accounts in {result.seconds:8.2f} s = {result.rate:8.2f} accounts/s "
        f"({per_day:.2f} worker-ms per account-day)"
    )
    cpu = result.cpu
    print(
        f"{'':<40} CPU per account-day: workers {cpu['workers'] / account_days * 1e3:.2f} ms, PostgreSQL backends of "
        f"the bench database {cpu['pg_bench'] / account_days * 1e3:.2f} ms; {result.cpu_rate:.2f} accounts per CPU-s; "
        "CPU-s per worker process " + ", ".join(f"{seconds:.1f}" for seconds in result.per_worker)
    )
    print(
        f"{'':<40} enqueue {result.enqueue_seconds:.2f} s; load average {result.load_before:.2f} -> "
        f"{result.load_after:.2f}; machine busy {result.system_busy:.0%} of {os.cpu_count()} cores; on average the "
        f"workers had {cpu['workers'] / result.seconds:.2f} cores, the bench database "
        f"{cpu['pg_bench'] / result.seconds:.2f}, Redis {cpu['redis'] / result.seconds:.2f}, this poller "
        f"{cpu['bench'] / result.seconds:.2f}, processes outside the bench {result.others_cores:.2f} (of which other "
        f"databases and PostgreSQL's background processes {cpu['pg_rest'] / result.seconds:.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--accounts", type=int, default=1000, help="vendor accounts (4 per organization)")
    parser.add_argument("--days", type=int, default=90, help="days of cost rows per account (3 rows a day)")
    parser.add_argument("--pool", choices=("prefork", "solo"), default="prefork", help="worker pool (concurrency 1)")
    parser.add_argument("--keep", action="store_true", help=f"keep the {BENCH_DATABASE} database afterwards")
    args = parser.parse_args()
    if args.accounts < 1 or args.days < 1:
        parser.error("--accounts and --days must be at least 1")

    config, created = database_prepare(os.environ["DATABASE_URL"], purpose=PURPOSE, default_name=BENCH_DATABASE)
    broker = broker_prepare(os.environ["CELERY_BROKER_URL"], default_url=DEFAULT_BROKER)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-settle-") as folder:
            run(args.accounts, args.days, args.pool, Path(folder), broker)
    finally:
        connections.close_all()
        broker.flushdb()
        if not args.keep and (created or config["NAME"] == BENCH_DATABASE):
            database_drop(config)
            print(f"Dropped database {config['NAME']} (--keep keeps it).")
        else:
            print(f"Left database {config['NAME']} in place.")


def run(accounts: int, days: int, pool: str, folder: Path, broker: redis.Redis) -> None:
    step("migrate", lambda: call_command("migrate", verbosity=0))
    account_ids = step(
        f"{accounts:,} accounts, {accounts * days * len(LINE_ITEMS):,} cost rows",
        lambda: bench_data_create(accounts, days),
    )
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        server = cursor.fetchone()[0]
    account_days = accounts * days
    expected_tx = account_days * 2  # a consumption and a customer charge per account-day
    print(
        f"Settlement on PostgreSQL {server} + Redis {broker.info('server')['redis_version']}: {accounts:,} accounts x "
        f"{days} days = {account_days:,} account-days, {pool} pool, {os.cpu_count()} CPU cores, "
        f"load average {os.getloadavg()[0]:.2f} before the runs."
    )

    step("reset the ledger", ledger_reset)
    first = settle_run("A: first settlement, 1 worker", 1, account_ids, pool, folder, "a")
    line(first, account_days)
    counts_a = ledger_counts()
    ledger_check("A", counts_a[0], expected_tx, broker)

    step("reset the ledger", ledger_reset)
    second = settle_run("B: first settlement, 2 workers", 2, account_ids, pool, folder, "b")
    line(second, account_days)
    counts_b = ledger_counts()
    ledger_check("B", counts_b[0], expected_tx, broker)
    if counts_b != counts_a:
        print(f"  ! run B posted {counts_b} (transactions, entries), run A {counts_a}")

    step("VACUUM (ANALYZE) the full ledger", ledger_vacuum)
    step("reset settled_at (every day is settled again)", watermarks_reset)
    again = settle_run("re-settle: every day unchanged, 1 worker", 1, account_ids, pool, folder, "r")
    line(again, account_days)
    counts_r = ledger_counts()
    print(
        f"{'':<40} posted {counts_r[0] - counts_b[0]:,} transactions "
        f"(expected 0: {'ok' if counts_r == counts_b else 'NOT 0'})"
    )
    if broker.llen(QUEUE):
        print(f"  ! {broker.llen(QUEUE)} messages left in the {QUEUE} queue")

    scaling = second.rate / first.rate
    resettle = again.seconds / first.seconds
    cores = os.cpu_count() or 1
    # What two workers could reach here: the cores left by processes outside the bench during run B, spent at
    # run A's CPU per account (workers + their backends), against run A's rate.
    ceiling = max(0.0, cores - second.others_cores) * first.cpu_rate / first.rate
    print()
    print("Summary")
    print(f"  data: {accounts:,} accounts x {days} days x {len(LINE_ITEMS)} cost rows; {pool} pool, concurrency 1")
    print(f"  A, 1 worker:  {first.rate:8.2f} accounts/s  ({first.seconds:.2f} s)")
    print(f"  B, 2 workers: {second.rate:8.2f} accounts/s  ({second.seconds:.2f} s)")
    print(f"  B/A throughput: {scaling:.2f} (goal ≥ 1.7: {verdict(scaling >= 1.7)})")
    print(
        f"  B/A in CPU time (accounts per CPU-s of the workers and the bench database's backends): "
        f"{second.cpu_rate / first.cpu_rate:.2f} (1.00: a second worker adds no work per account); cores left by "
        f"processes outside the bench during B: {max(0.0, cores - second.others_cores):.2f} of {cores}, which at A's "
        f"CPU per account caps B/A at {ceiling:.2f}"
    )
    print(f"  re-settle / first settlement (A) time: {resettle:.2f} (goal ≤ 0.2: {verdict(resettle <= 0.2)})")
    print(
        f"  re-settle / first settlement (A) in CPU time (workers + the bench database's backends): "
        f"{again.bench_cpu / first.bench_cpu:.2f}"
    )
    runs = (("A", first), ("B", second), ("re-settle", again))
    print(
        f"  CPU: {cores} cores shared by PostgreSQL, Redis, the workers, this poller and whatever else runs on the "
        "machine; machine busy "
        + ", ".join(f"{name} {r.system_busy:.0%}" for name, r in runs)
        + "; cores used by the workers "
        + ", ".join(f"{name} {r.cpu['workers'] / r.seconds:.2f}" for name, r in runs)
        + ", by processes outside the bench "
        + ", ".join(f"{name} {r.others_cores:.2f}" for name, r in runs)
        + "; load average (1 min) "
        + ", ".join(f"{name} {r.load_before:.2f} -> {r.load_after:.2f}" for name, r in runs)
    )


def ledger_check(label: str, transactions: int, expected: int, broker: redis.Redis) -> None:
    status = "ok" if transactions == expected else "MISMATCH"
    print(f"{'':<40} run {label} posted {transactions:,} transactions (expected {expected:,}: {status})")
    if broker.llen(QUEUE):
        print(f"  ! {broker.llen(QUEUE)} messages left in the {QUEUE} queue after run {label}")


if __name__ == "__main__":
    main()

"""Monthly close through real Celery workers on PostgreSQL + Redis: invoices/s with one worker and with two.

    python bench/invoice_close.py [--orgs N] [--pool prefork|solo] [--cold] [--keep] [--reuse]

Data (not timed): a default ``Issuer`` (no tax regime) and ``--orgs`` organizations in USD (no exchange rate is
involved), each with a billing email and 3 vendor accounts (OpenAI, Anthropic, Azure OpenAI) holding every day of
October 2026, 3 line items a day (93 cost rows per account, 2 models per account), written with
``cost_rows_upsert``. Every account is then settled through two workers (``-Q settlement``), also untimed.

Why settled beforehand: in production the daily ``settle_all`` has posted every day of the month before the monthly
close runs, so the settlement pass at the start of ``period_close`` only looks for cost rows changed since the
account's watermark (none here) and runs the reconciliation and after-settlement steps; that pass *is* timed, as part
of every close. Settling 93 account-days per invoice inside the timed part would turn this into a second settlement
benchmark (``bench/settle.py`` measures that). Close posts nothing to the ledger, so the reset between the runs
leaves it alone and both runs close the very same settled ledger.

Run A: one worker process (``celery -A aggregator worker -Q invoicing,settlement --concurrency 1``); one
``close_period_task.delay(org_id, "2026-10")`` per organization, in the order of ``close_period_all``, timed from
the first enqueue until every organization's invoice is finalized *and* its PDF stored (``pdf_sha256``): each close
(settlement pass, draft, finalization) and the ``invoice_deliver_task`` it queues (invoice HTML, usage CSV,
WeasyPrint, file storage, the email through Django's dummy backend). Invoices, lines, credit notes and number series
are then truncated and the PDFs deleted, and run B does the same with two worker processes of concurrency 1 each
(goal: B/A ≥ 1.7).

Warm-up (unless ``--cold``): each worker starts on a queue of its own, closes and delivers one warm-up organization
there (imports, template and font caches, the database connection), and only then is told to consume ``invoicing``
and ``settlement``, so the timed part is the steady state of a monthly run, whatever ``--orgs``.

Needs PostgreSQL and Redis: DATABASE_URL defaults to postgres://postgres@127.0.0.1:5432/aggregator_bench_close, a
database the script creates when missing and drops at the end (unless --keep); CELERY_BROKER_URL defaults to
redis://127.0.0.1:6379/14, a Redis database of its own that the script flushes at the start. ``--keep --reuse``
reuses the settled data of a kept database when it matches ``--orgs``: the untimed settlement of every account-day
is most of the script's time (31 days x 3 accounts per organization, settled one day per transaction). The bench and its
workers run with DEBUG=1, EMAIL_BACKEND=django.core.mail.backends.dummy.EmailBackend and a temporary MEDIA_ROOT.
Timings are printed, never asserted; the load average and the CPU taken by the workers, PostgreSQL, Redis and the
machine's other processes are printed beside them. Quick mode: --orgs 50.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# A temporary folder for the media (PDFs) and the worker logs, removed at the end.
os.environ["BENCH_CLOSE_DIR"] = tempfile.mkdtemp(prefix="bench-close-")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aggregator.settings")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/aggregator_bench_close")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/14")
os.environ["DEBUG"] = "1"
# The tasks must go through the broker to the workers, and the workers must neither email anyone nor write into
# the project's media folder, whatever a local .env says (these reach the workers through their environment).
os.environ["CELERY_TASK_ALWAYS_EAGER"] = "0"
os.environ["EMAIL_BACKEND"] = "django.core.mail.backends.dummy.EmailBackend"
os.environ["MEDIA_ROOT"] = os.path.join(os.environ["BENCH_CLOSE_DIR"], "media")

import django
import redis

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, connections, transaction  # noqa: E402
from django.db.models import Count, Q, Sum  # noqa: E402
from django.utils import timezone  # noqa: E402

from aggregator.celery import app as celery_app  # noqa: E402
from aggregator.tenancy.models import Issuer, Organization  # noqa: E402
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
from billing.invoicing.models import CreditNote, Invoice, InvoiceLine, NumberSeries  # noqa: E402
from billing.invoicing.tasks import close_period_task, invoice_deliver_task  # noqa: E402
from billing.ledger.models import LedgerAccount, LedgerEntry, LedgerTransaction  # noqa: E402
from billing.ledger.tasks import settle_vendor_account_task  # noqa: E402
from providers import credentials as vault  # noqa: E402
from providers.connectors.base import CostRow  # noqa: E402
from providers.ingest import cost_rows_upsert  # noqa: E402
from providers.models import CostRecord, VendorAccount  # noqa: E402

# The bench process only enqueues and polls; its own query log would just grow. The workers keep DEBUG=1.
settings.DEBUG = False

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(os.environ["BENCH_CLOSE_DIR"])
BENCH_DATABASE = "aggregator_bench_close"
DEFAULT_BROKER = "redis://127.0.0.1:6379/14"  # CELERY_BROKER_URL unless set
PURPOSE = "bench/invoice_close.py measures the monthly close by concurrent workers on PostgreSQL"
SEED = 20261031
PERIOD = "2026-10"
PERIOD_START, PERIOD_END = date(2026, 10, 1), date(2026, 10, 31)
ORG_SLUG_PREFIX = "bench-close-"
WARM_SLUG_PREFIX = "bench-close-warm-up-"
ISSUER_NAME = "Bench Close Issuer"
FEE_PERCENT = Decimal("5.000")
ADMIN_KEY = "sk-admin-FAKE-bench-0000"
# (vendor, label, ((model, line item), …)): 3 line items a day, 2 models, so 2 usage lines and a fee line per account.
VENDORS = (
    ("openai", "OpenAI", (("gpt-4o-2024-08-06", "input"), ("gpt-4o-2024-08-06", "output"), ("gpt-4o-mini", "input"))),
    (
        "anthropic",
        "Anthropic",
        (("claude-sonnet-4", "input"), ("claude-sonnet-4", "output"), ("claude-haiku-3.5", "input")),
    ),
    ("azure_openai", "Azure OpenAI", (("gpt-4o", "input"), ("gpt-4o", "output"), ("gpt-4.1-mini", "input"))),
)
QUEUES = ("invoicing", "settlement")
WARM_UPS = 2  # warm-up organizations: one per worker of run B
POLL_SECONDS = 0.2
STALL_SECONDS = 180.0
WORKER_READY_SECONDS = 90.0
WORKER_LOG_TAIL = 3000


# --- PostgreSQL and Redis -----------------------------------------------------------------------------------------


def sql_run(*statements: str) -> None:
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def tables(*models: Any) -> str:
    return ", ".join(model._meta.db_table for model in models)


# --- data (not timed) ---------------------------------------------------------------------------------------------


@dataclass
class BenchData:
    organization_ids: list[int]  # in close_period_all order
    warm_up_ids: list[int]  # one per worker of the largest run
    account_ids: list[int]


def bench_data_create(orgs: int, warm_ups: int) -> BenchData:
    """The issuer, organizations, vendor accounts and their cost rows of October 2026."""
    if Organization.objects.exclude(slug__startswith=ORG_SLUG_PREFIX).exists() or (
        Issuer.objects.exclude(name=ISSUER_NAME).exists()
    ):
        sys.exit(
            "The database holds organizations or issuers the bench did not create, and the bench truncates invoices "
            f"and the ledger. Point DATABASE_URL at a database of its own (default: {BENCH_DATABASE})."
        )
    # Whatever a previous --keep run left (TRUNCATE also bypasses the append-only row triggers).
    sql_run(f"TRUNCATE {tables(Organization, Issuer, LedgerEntry, LedgerTransaction, LedgerAccount, Alert)} CASCADE")
    Issuer.objects.create(
        name=ISSUER_NAME,
        legal_name="Bench Close Issuer LLC",
        address="1 Ledger Lane\nWilmington, DE 19801",
        country="US",
        email="billing@issuer.test",
        is_default=True,
        bank_details="Bench Bank, account 000123456",
    )
    organizations = Organization.objects.bulk_create(
        [
            Organization(
                slug=f"{ORG_SLUG_PREFIX}{n:05d}",
                name=f"Close bench {n:05d}",
                legal_name=f"Close Bench {n:05d} Inc.",
                address=f"{n} Market Street\nSan Francisco, CA 94105",
                country="US",
                currency="USD",
                billing_email=f"ap@org{n:05d}.test",
                fee_percent=FEE_PERCENT,
            )
            for n in range(orgs)
        ]
        + [
            Organization(
                slug=f"{WARM_SLUG_PREFIX}{n}",
                name=f"Warm-up {n}",
                country="US",
                currency="USD",
                billing_email=f"ap@warm-up{n}.test",
                fee_percent=FEE_PERCENT,
            )
            for n in range(warm_ups)
        ]
    )
    token = vault.encrypt({"admin_key": ADMIN_KEY})
    VendorAccount.objects.bulk_create(
        VendorAccount(
            organization=organization,
            vendor=vendor,
            label=label,
            credentials_encrypted=token,
            credentials_masked={"admin_key": vault.mask(ADMIN_KEY)},
        )
        for organization in organizations
        for vendor, label, _items in VENDORS
    )
    items = {vendor: line_items for vendor, _label, line_items in VENDORS}
    rng = random.Random(SEED)
    days = []
    for n in range((PERIOD_END - PERIOD_START).days + 1):
        start = datetime.combine(PERIOD_START + timedelta(days=n), datetime.min.time(), tzinfo=UTC)
        days.append((start.date().isoformat(), start, start + timedelta(days=1)))
    now = timezone.now()
    everyone = list(VendorAccount.objects.order_by("pk"))
    for offset in range(0, len(everyone), 100):
        with transaction.atomic():
            for account in everyone[offset : offset + 100]:
                rows = [
                    CostRow(
                        source_key=f"cost:{day}::{model}:{item}",
                        charge_period_start=start,
                        charge_period_end=end,
                        billed_cost=Decimal(rng.randrange(1, 20_000_000)).scaleb(-6),
                        billing_currency="USD",
                        service_name=model,
                        charge_description=f"{model}, {item}",
                        consumed_quantity=Decimal(rng.randrange(1, 5_000_000)),
                        consumed_unit="tokens",
                    )
                    for day, start, end in days
                    for model, item in items[account.vendor]
                ]
                cost_rows_upsert(account=account, rows=rows, now=now)
    sql_run(*(f"VACUUM (ANALYZE) {m._meta.db_table}" for m in (CostRecord, VendorAccount, Organization)))
    # The order of billing.invoicing.tasks.close_period_all (the model's ordering: name).
    ordered = list(Organization.objects.values_list("pk", "slug"))
    return BenchData(
        organization_ids=[pk for pk, slug in ordered if not slug.startswith(WARM_SLUG_PREFIX)],
        warm_up_ids=[pk for pk, slug in sorted(ordered, key=lambda o: o[1]) if slug.startswith(WARM_SLUG_PREFIX)],
        account_ids=list(VendorAccount.objects.values_list("pk", flat=True)),
    )


def bench_data_found(orgs: int, warm_ups: int, days: int, rows: int) -> BenchData | None:
    """The data of a kept database when it is exactly what ``bench_data_create(orgs, warm_ups)`` and ``presettle``
    leave (the organizations, every account settled, every account-day posted); None otherwise."""
    ordered = list(Organization.objects.values_list("pk", "slug"))
    timed = [pk for pk, slug in ordered if not slug.startswith(WARM_SLUG_PREFIX)]
    warm = [pk for pk, slug in sorted(ordered, key=lambda o: o[1]) if slug.startswith(WARM_SLUG_PREFIX)]
    accounts = list(VendorAccount.objects.values_list("pk", flat=True))
    if (
        len(timed) != orgs
        or len(warm) != warm_ups
        or any(not slug.startswith(ORG_SLUG_PREFIX) for _pk, slug in ordered)
        or list(Issuer.objects.values_list("name", flat=True)) != [ISSUER_NAME]
        or len(accounts) != (orgs + warm_ups) * len(VENDORS)
        or VendorAccount.objects.filter(settled_at__isnull=True).exists()
        or CostRecord.objects.count() != (orgs + warm_ups) * rows
        or LedgerTransaction.objects.count() != len(accounts) * days * 2
    ):
        return None
    return BenchData(organization_ids=timed, warm_up_ids=warm, account_ids=accounts)


def presettle(account_ids: Sequence[int], pool: str) -> int:
    """Settle every account through two workers (the daily settlement that precedes a close); returns the number
    of ledger transactions posted."""
    started = workers_start(2, pool, "s", ("settlement",))
    try:
        for account_id in account_ids:
            settle_vendor_account_task.delay(account_id)
        pending = VendorAccount.objects.filter(settled_at__isnull=True)
        progress_wait(lambda: len(account_ids) - pending.count(), len(account_ids), "accounts settled", started, None)
    finally:
        workers_stop(started)
    sql_run(
        *(f"VACUUM (ANALYZE) {m._meta.db_table}" for m in (LedgerEntry, LedgerTransaction, LedgerAccount, Alert)),
        f"VACUUM (ANALYZE) {VendorAccount._meta.db_table}",
    )
    return LedgerTransaction.objects.count()


def invoices_reset() -> None:
    """No invoice, line, credit note or number series, and no stored PDF: the next run closes every organization
    from scratch. (A finalized invoice refuses ``delete()``; TRUNCATE bypasses that.) The ledger stays: close only
    settles what changed since the watermark, which is nothing."""
    sql_run(f"TRUNCATE {tables(InvoiceLine, CreditNote, Invoice, NumberSeries)} CASCADE")
    shutil.rmtree(settings.MEDIA_ROOT, ignore_errors=True)
    sql_run(f"VACUUM (ANALYZE) {tables(Invoice, InvoiceLine, NumberSeries)}", "CHECKPOINT")


# --- workers -----------------------------------------------------------------------------------------------------


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    warm_queue: str

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-WORKER_LOG_TAIL:]


def workers_start(count: int, pool: str, run: str, queues: Sequence[str] | None) -> list[Worker]:
    """``count`` worker processes of concurrency 1 on ``queues``, or each on a warm-up queue of its own (None)."""
    env = {
        **os.environ,
        "DEBUG": "1",
        "DJANGO_SETTINGS_MODULE": "aggregator.settings",
        "PYTHONPATH": str(ROOT),
        "LOG_LEVEL": "WARNING",
    }
    workers = []
    for n in range(1, count + 1):
        name = f"bench-close-{run}{n}@{socket.gethostname()}"
        warm_queue = f"bench-close-warm-up-{run}{n}"
        log = BENCH_DIR / f"worker-{run}{n}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(  # noqa: S603 (fixed arguments, the interpreter running this script)
                [
                    sys.executable, "-m", "celery", "-A", "aggregator", "worker",
                    "-Q", ",".join(queues) if queues else warm_queue,
                    "--pool", pool, "--concurrency", "1", "--loglevel", "WARNING", "-n", name,
                    "--without-gossip", "--without-mingle", "--without-heartbeat",
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        workers.append(Worker(name, process, log, warm_queue))
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


def workers_warm_up(workers: Sequence[Worker], warm_up_ids: Sequence[int]) -> None:
    """Each worker, alone on its own queue, closes and delivers one warm-up organization; then every worker
    consumes ``invoicing`` and ``settlement`` and leaves its warm-up queue."""
    organizations = dict(zip((w.name for w in workers), warm_up_ids, strict=False))
    for worker in workers:
        close_period_task.apply_async((organizations[worker.name], PERIOD), queue=worker.warm_queue)
    finalized = Invoice.objects.filter(organization_id__in=organizations.values()).exclude(status=Invoice.Status.DRAFT)
    progress_wait(finalized.count, len(workers), "warm-up invoices finalized", workers, None)
    # Finalization queued their delivery on `invoicing`, which no worker consumes yet: each worker delivers its own.
    invoice_ids = dict(finalized.values_list("organization_id", "pk"))
    for worker in workers:
        invoice_deliver_task.apply_async((invoice_ids[organizations[worker.name]],), queue=worker.warm_queue)
    delivered = finalized.exclude(pdf_sha256="")
    progress_wait(delivered.count, len(workers), "warm-up invoices delivered", workers, None)
    with celery_app.connection_for_write() as conn:
        conn.default_channel.queue_purge("invoicing")  # the routed deliveries, now no-ops
    names = [w.name for w in workers]
    for queue in QUEUES:
        replies = celery_app.control.add_consumer(queue, destination=names, reply=True, timeout=10)
        if len(replies) != len(workers):
            raise RuntimeError(f"add_consumer {queue}: {replies}")
    for worker in workers:
        celery_app.control.cancel_consumer(worker.warm_queue, destination=[worker.name], reply=True, timeout=10)


def progress_wait(
    done: Callable[[], int],
    expected: int,
    what: str,
    workers: Sequence[Worker],
    cpu: CpuWatch | None,
    activity: Callable[[], int] | None = None,
) -> None:
    """Poll ``done()`` until it reaches ``expected``; give up when nothing moves for STALL_SECONDS. Movement is
    ``activity()`` when given (read after ``done()``), else ``done()`` itself."""
    last, moved = -1, time.monotonic()
    while (count := done()) < expected:
        now = time.monotonic()
        current = activity() if activity is not None else count
        if current != last:
            last, moved = current, now
        dead = [w for w in workers if w.process.poll() is not None]
        if dead or now - moved > STALL_SECONDS:
            why = f"worker {dead[0].name} exited" if dead else f"nothing moved for {STALL_SECONDS:.0f} s"
            logs = "\n".join(f"--- {w.name}\n{w.tail()}" for w in workers)
            raise RuntimeError(f"{count} of {expected} {what}: {why}.\n{logs}")
        if cpu is not None:
            cpu.sample()
        time.sleep(POLL_SECONDS)


# --- one timed run -------------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    label: str
    workers: int
    invoices: int
    seconds: float
    enqueue_seconds: float
    closed_seconds: float  # until the last invoice was finalized (the deliveries queued behind the closes)
    cpu: dict[str, float]
    per_worker: list[float]  # CPU seconds of each worker process
    system_busy: float
    load_before: float
    load_after: float
    outcome: dict[str, Any]

    @property
    def rate(self) -> float:
        return self.invoices / self.seconds if self.seconds > 0 else float("inf")


def close_run(label: str, workers: int, data: BenchData, pool: str, run: str, *, cold: bool) -> RunResult:
    """Start ``workers`` worker processes, enqueue one close per organization, wait until every invoice is
    finalized and its PDF stored, stop them."""
    if Invoice.objects.exists():
        raise RuntimeError("the invoice table must be empty before a run")
    started = workers_start(workers, pool, run, QUEUES if cold else None)
    try:
        if not cold:
            workers_warm_up(started, data.warm_up_ids)
        expected = len(data.organization_ids)
        timed = Invoice.objects.exclude(organization_id__in=data.warm_up_ids)
        state: dict[str, Any] = {"closed": None, "activity": 0}
        cpu = CpuWatch(started, database=str(connection.settings_dict["NAME"]))
        start = time.perf_counter()
        for organization_id in data.organization_ids:
            close_period_task.delay(organization_id, PERIOD)
        enqueued = time.perf_counter() - start

        def delivered() -> int:
            counts = timed.aggregate(
                finalized=Count("pk", filter=~Q(status=Invoice.Status.DRAFT)),
                delivered=Count("pk", filter=~Q(status=Invoice.Status.DRAFT) & ~Q(pdf_sha256="")),
            )
            if state["closed"] is None and counts["finalized"] >= expected:
                state["closed"] = time.perf_counter() - start
            state["activity"] = counts["finalized"] + counts["delivered"]
            return int(counts["delivered"])

        # The deliveries queue behind every close: the delivered count stays at 0 until the last close, so a
        # stall is judged on closes and deliveries together.
        progress_wait(
            delivered, expected, "invoices finalized and delivered", started, cpu, lambda: int(state["activity"] or 0)
        )
        seconds = time.perf_counter() - start
        shares, busy = cpu.shares()
        per_worker = cpu.per_worker()
    finally:
        workers_stop(started)
    return RunResult(
        label=label,
        workers=workers,
        invoices=expected,
        seconds=seconds,
        enqueue_seconds=enqueued,
        closed_seconds=state["closed"] or seconds,
        cpu=shares,
        per_worker=per_worker,
        system_busy=busy,
        load_before=cpu.load_before,
        load_after=load_average(),
        outcome=outcome(data),
    )


def outcome(data: BenchData) -> dict[str, Any]:
    """What the run produced for the timed organizations, to compare run B with run A."""
    timed = Invoice.objects.exclude(organization_id__in=data.warm_up_ids)
    found = timed.aggregate(
        invoices=Count("pk"),
        numbers=Count("number", distinct=True),
        emailed=Count("pk", filter=Q(emailed_at__isnull=False)),
        total=Sum("total"),
    )
    lines = InvoiceLine.objects.filter(invoice__in=timed)
    found["lines"] = lines.count()
    found["fees"] = lines.filter(kind=InvoiceLine.Kind.FEE).aggregate(fees=Sum("amount"))["fees"]
    media = Path(settings.MEDIA_ROOT)
    found["pdf_files"] = sum((media / name).is_file() for name in timed.exclude(pdf="").values_list("pdf", flat=True))
    return found


# --- report -------------------------------------------------------------------------------------------------------


def line(result: RunResult) -> None:
    cpu, n = result.cpu, result.invoices
    print(
        f"{result.label:<14} {n:>6,} invoices in {result.seconds:8.2f} s = {result.rate:6.2f} invoices/s; the last "
        f"close finalized at {result.closed_seconds:.2f} s, the deliveries queued behind the closes took the rest "
        f"(enqueue {result.enqueue_seconds:.2f} s)"
    )
    print(
        f"{'':<14} CPU per invoice: workers {cpu['workers'] / n * 1e3:.0f} ms, PostgreSQL backends of the bench "
        f"database {cpu['pg_bench'] / n * 1e3:.0f} ms, Redis {cpu['redis'] / n * 1e3:.1f} ms; CPU-s per worker "
        "process " + ", ".join(f"{seconds:.1f}" for seconds in result.per_worker)
    )
    print(
        f"{'':<14} load average {result.load_before:.2f} -> {result.load_after:.2f}; machine busy "
        f"{result.system_busy:.0%} of {os.cpu_count()} cores; on average the workers had "
        f"{cpu['workers'] / result.seconds:.2f} cores, the bench database {cpu['pg_bench'] / result.seconds:.2f}, "
        f"processes outside the bench {(cpu['other'] + cpu['pg_rest']) / result.seconds:.2f} (of which other "
        f"databases and PostgreSQL's background processes {cpu['pg_rest'] / result.seconds:.2f})"
    )
    o = result.outcome
    status = "ok" if o["invoices"] == o["emailed"] == o["numbers"] == o["pdf_files"] == n else "MISMATCH"
    print(
        f"{'':<14} {o['invoices']:,} invoices, {o['numbers']:,} numbers, {o['pdf_files']:,} PDFs, {o['emailed']:,} "
        f"emailed ({status}); {o['lines']:,} lines, total {o['total'] or 0:,.2f} USD, fees {o['fees'] or 0:,.2f} USD"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--orgs", type=int, default=1000, help="organizations (3 vendor accounts each)")
    parser.add_argument("--pool", choices=("prefork", "solo"), default="prefork", help="worker pool (concurrency 1)")
    parser.add_argument("--cold", action="store_true", help="no warm-up: workers start on invoicing,settlement")
    parser.add_argument("--keep", action="store_true", help=f"keep the {BENCH_DATABASE} database afterwards")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="reuse the settled data of a database kept by --keep when it matches --orgs (skips data and settlement)",
    )
    args = parser.parse_args()
    if args.orgs < 1:
        parser.error("--orgs must be at least 1")

    config, created = database_prepare(os.environ["DATABASE_URL"], purpose=PURPOSE, default_name=BENCH_DATABASE)
    broker = broker_prepare(os.environ["CELERY_BROKER_URL"], default_url=DEFAULT_BROKER)
    try:
        run(args.orgs, args.pool, broker, cold=args.cold, reuse=args.reuse)
    finally:
        connections.close_all()
        broker.flushdb()
        shutil.rmtree(BENCH_DIR, ignore_errors=True)
        if not args.keep and (created or config["NAME"] == BENCH_DATABASE):
            database_drop(config)
            print(f"Dropped database {config['NAME']} (--keep keeps it).")
        else:
            print(f"Left database {config['NAME']} in place.")


def run(orgs: int, pool: str, broker: redis.Redis, *, cold: bool, reuse: bool) -> None:
    step("migrate", lambda: call_command("migrate", verbosity=0))
    accounts = orgs * len(VENDORS)
    days = (PERIOD_END - PERIOD_START).days + 1
    rows = sum(len(items) for _v, _l, items in VENDORS) * days
    data = bench_data_found(orgs, WARM_UPS, days, rows) if reuse else None
    if data is not None:
        print(f"  … reusing the settled data of {orgs:,} organizations (+{WARM_UPS} warm-up) kept by an earlier run")
    else:
        data = step(
            f"{orgs:,} organizations (+{WARM_UPS} warm-up), {accounts:,} vendor accounts, "
            f"{(orgs + WARM_UPS) * rows:,} cost rows",
            lambda: bench_data_create(orgs, WARM_UPS),
        )
        posted = step(
            f"settle {len(data.account_ids):,} accounts x {days} days with 2 workers",
            lambda: presettle(data.account_ids, pool),
        )
        expected_tx = len(data.account_ids) * days * 2  # a consumption and a customer charge per account-day
        status = "ok" if posted == expected_tx else "MISMATCH"
        print(f"  … posted {posted:,} ledger transactions (expected {expected_tx:,}: {status})")
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        server = cursor.fetchone()[0]
    print(
        f"Monthly close of {PERIOD} on PostgreSQL {server} + Redis {broker.info('server')['redis_version']}: "
        f"{orgs:,} organizations x {len(VENDORS)} vendor accounts x {days} days x 3 line items, {pool} pool, "
        f"{'no warm-up' if cold else 'warmed-up workers'}, {os.cpu_count()} CPU cores, load average "
        f"{load_average():.2f} before the runs."
    )

    step("reset invoices", invoices_reset)
    first = close_run("A: 1 worker", 1, data, pool, "a", cold=cold)
    line(first)
    leftovers(broker, "A")

    step("reset invoices", invoices_reset)
    second = close_run("B: 2 workers", 2, data, pool, "b", cold=cold)
    line(second)
    leftovers(broker, "B")
    same = second.outcome == first.outcome
    print(f"{'':<14} run B produced the same invoices, lines and totals as run A: {'ok' if same else 'NO'}")

    scaling = second.rate / first.rate
    runs = (("A", first), ("B", second))
    per_invoice = {name: (r.cpu["workers"] + r.cpu["pg_bench"]) / r.invoices * 1e3 for name, r in runs}
    print()
    print("Summary")
    print(f"  data: {orgs:,} organizations x {len(VENDORS)} accounts x {days} days x 3 cost rows, settled beforehand; "
          f"{pool} pool, concurrency 1; {'no warm-up' if cold else 'workers warmed up'}")  # fmt: skip
    print(f"  A, 1 worker:  {first.rate:7.2f} invoices/s  ({first.seconds:.2f} s)")
    print(f"  B, 2 workers: {second.rate:7.2f} invoices/s  ({second.seconds:.2f} s)")
    print(f"  B/A throughput: {scaling:.2f} (goal ≥ 1.7: {verdict(scaling >= 1.7)})")
    print(
        "  CPU per invoice, workers + the bench database's backends: "
        + ", ".join(f"{name} {ms:.0f} ms" for name, ms in per_invoice.items())
        + f" (B/A {per_invoice['B'] / per_invoice['A']:.2f}: about 1 when a second worker adds no work per invoice)"
    )
    # What two workers could reach here: the cores that processes outside the bench left during run B, spent at
    # run A's CPU per invoice (workers + their backends), against run A's rate.
    cores = os.cpu_count() or 1
    left = max(0.0, cores - (second.cpu["other"] + second.cpu["pg_rest"]) / second.seconds)
    ceiling = left / (per_invoice["A"] / 1e3) / first.rate
    print(
        f"  B/A in CPU time (invoices per CPU-s of the workers and the bench database's backends): "
        f"{per_invoice['A'] / per_invoice['B']:.2f}; cores left by processes outside the bench during B: {left:.2f} "
        f"of {cores}, which at A's CPU per invoice caps B/A at {ceiling:.2f}"
    )
    print(
        f"  CPU: {os.cpu_count()} cores shared by PostgreSQL, Redis, the workers, this poller and whatever else "
        "runs on the machine; machine busy "
        + ", ".join(f"{name} {r.system_busy:.0%}" for name, r in runs)
        + "; cores used by the workers "
        + ", ".join(f"{name} {r.cpu['workers'] / r.seconds:.2f}" for name, r in runs)
        + ", by processes outside the bench "
        + ", ".join(f"{name} {(r.cpu['other'] + r.cpu['pg_rest']) / r.seconds:.2f}" for name, r in runs)
        + "; load average (1 min) "
        + ", ".join(f"{name} {r.load_before:.2f} -> {r.load_after:.2f}" for name, r in runs)
        + f"; now {load_average():.2f}"
    )


def leftovers(broker: redis.Redis, label: str) -> None:
    for queue in QUEUES:
        if broker.llen(queue):
            print(f"  ! {broker.llen(queue)} messages left in the {queue} queue after run {label}")


if __name__ == "__main__":
    main()

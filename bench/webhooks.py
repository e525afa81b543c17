"""Stripe webhook intake under gunicorn: signed events/s against a bare Django view, then exactly-once processing.

    python bench/webhooks.py [--events N] [--duplicates N] [--rounds N] [--concurrency N] [--workers N]
                             [--threads N] [--keep]

Data (not timed): one organization with ``--events``/2 open invoices (USD 10.00 each) per round. Each round's burst
is ``--events`` (2,000) deliveries signed as Stripe signs them (``Stripe-Signature: t=<unix time>,v1=<hex
HMAC-SHA256 of "<t>.<raw body>" keyed with STRIPE_WEBHOOK_SECRET>``), of events of its own: one
``payment_intent.succeeded`` per invoice (each pays its invoice, matched by ``metadata.invoice_id``),
``customer.updated`` events (stored, nothing to do), and, last, ``--duplicates`` (200) second deliveries of
earlier events, as Stripe redelivers. The requests are built and signed just before each burst (the gateway's work).

Timed: the app runs under gunicorn on loopback with the product's ``gunicorn.conf.py`` (threaded workers;
``--workers`` and ``--threads`` override its counts), DEBUG off, and the bench-only
settings and URLconf ``bench/webhooks_settings.py`` / ``bench/webhooks_urls.py``, which add ``POST /bench/bare/``
(a view that only answers 200) to the product's routes. After a warm-up (every worker opens its connections), an
asyncio client with ``--concurrency`` requests in flight POSTs a burst to the bare view, then ``--rounds`` (3)
times a burst to ``/webhooks/stripe/`` followed by one to the bare view. Each webhook burst is compared with the
faster of the bare bursts beside it, and the figure is the median of the rounds (goal >= 0.5): the machine's
speed drifts between bursts. The client is a few lines of asyncio HTTP/1.1 so that it costs a fraction of the
server (a full HTTP client made the bare rate the client's). The webhook verifies each signature, stores the
event once (deliveries a worker's threads handle together share one INSERT) and makes sure one drain task is
queued for the next second (a Celery message at most once a second); processing is not part of the timed part.
Each line also gives the CPU time per event of the server (gunicorn's processes), of the PostgreSQL backends
(Linux /proc) and of the client, and the ratio in CPU time, which other work on the machine skews less than wall
time; the load average is printed at start and end.

Then a Celery worker (queue ``payments``) runs the queued drain tasks, and the script proves exactly-once: every
delivery answered 200, every duplicate answered ``"duplicate": true``, one ``WebhookEvent`` row per event id,
every row processed or ignored with one attempt, one ``Payment`` per success event, every invoice paid exactly
its amount (a duplicate processed twice would pay it twice).

Needs PostgreSQL and Redis: DATABASE_URL defaults to postgres://postgres@127.0.0.1:5432/aggr_benchwh, a database
the script drops and creates at the start and drops at the end (unless --keep); CELERY_BROKER_URL defaults to
redis://127.0.0.1:6379/13, a Redis database of its own that the script flushes. Figures are printed, never
asserted, except the exactly-once proof, whose failure exits with status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/aggr_benchwh")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/13")
# The webhook's processing trigger (one drain task a second) lives in the cache: Redis, as in production.
os.environ.setdefault("CACHE_URL", os.environ["CELERY_BROKER_URL"])
os.environ["DJANGO_SETTINGS_MODULE"] = "bench.webhooks_settings"
os.environ["DEBUG"] = "1"  # the bench process itself; the server runs with DEBUG off
os.environ["CELERY_TASK_ALWAYS_EAGER"] = "0"
os.environ["STRIPE_WEBHOOK_SECRET"] = WEBHOOK_SECRET = "whsec_FAKE_bench_webhooks_0000"  # noqa: S105 (fake)
# The Stripe gateway must be configured for the webhook to verify; it never calls Stripe here.
os.environ["STRIPE_SECRET_KEY"] = "sk_test_FAKE_bench_webhooks_0000"  # noqa: S105 (fake)
os.environ["STRIPE_API_BASE"] = "http://127.0.0.1:9"

import django
import httpx

from bench._infra import CLOCK_TICKS, broker_prepare, database_drop, database_prepare, process_tree

ROOT = Path(__file__).resolve().parent.parent
BENCH_DATABASE = "aggr_benchwh"
DEFAULT_BROKER = "redis://127.0.0.1:6379/13"  # CELERY_BROKER_URL unless set
PURPOSE = "bench/webhooks.py measures the webhook under gunicorn on PostgreSQL"
QUEUE = "payments"
ORG_SLUG = "bench-webhooks"
INVOICE_AMOUNT = Decimal("10.00")
SERVER_READY_SECONDS = 60.0
WORKER_READY_SECONDS = 90.0
PROCESS_STALL_SECONDS = 120.0
LOG_TAIL = 3000
GOAL = 0.5
# The product's gunicorn settings (worker class, processes, threads): the bench measures what production runs.
GUNICORN_CONFIG = ROOT / "gunicorn.conf.py"

# --- data and events (not timed) -----------------------------------------------------------------------------------


def invoices_create(count: int, offset: int = 0) -> list[int]:
    """``count`` open invoices numbered from ``offset`` (each round of the burst pays its own)."""
    from aggregator.tenancy.models import Issuer, Organization
    from billing.invoicing.models import Invoice

    organization, _created = Organization.objects.get_or_create(
        slug=ORG_SLUG, defaults={"name": "Webhook bench", "currency": "USD"}
    )
    issuer, _created = Issuer.objects.get_or_create(name="Bench issuer", defaults={"country": "US", "is_default": True})
    first = date(1990, 1, 1) + timedelta(days=offset)
    Invoice.objects.bulk_create(
        Invoice(
            organization=organization, issuer=issuer, number=f"INV-BENCH-{offset + n:06d}", status=Invoice.Status.OPEN,
            period_start=first + timedelta(days=n), period_end=first + timedelta(days=n), currency="USD",
            billing_mode="consolidated", total=INVOICE_AMOUNT, amount_due=INVOICE_AMOUNT,
        )
        for n in range(count)
    )  # fmt: skip
    numbers = [f"INV-BENCH-{n:06d}" for n in range(offset, offset + count)]
    return list(Invoice.objects.filter(number__in=numbers).order_by("pk").values_list("pk", flat=True))


def events_build(invoice_ids: list[int], others: int, run: int = 0) -> list[dict[str, Any]]:
    """One success per invoice (Stripe's shape, the charge expanded so nothing is fetched) and ``others``
    events the product stores but has nothing to do for, interleaved; ids unique to the round ``run``."""
    created = int(time.time())
    minor = int(INVOICE_AMOUNT * 100)
    successes = [
        {
            "id": f"evt_bench_paid_{run}_{n:06d}", "object": "event", "api_version": "2026-10-28.endive",
            "created": created, "type": "payment_intent.succeeded", "livemode": False,
            "data": {"object": {
                "id": f"pi_bench_{run}_{n:06d}", "object": "payment_intent", "amount": minor, "amount_received": minor,
                "currency": "usd", "status": "succeeded",
                "metadata": {"invoice_id": str(pk), "attempt": "1"},
                "latest_charge": {"id": f"ch_bench_{run}_{n:06d}", "object": "charge", "payment_method_details": {
                    "type": "card", "card": {"brand": "visa", "last4": "4242", "wallet": None}}},
            }},
        }
        for n, pk in enumerate(invoice_ids)
    ]  # fmt: skip
    ignored = [
        {
            "id": f"evt_bench_customer_{run}_{n:06d}", "object": "event", "api_version": "2026-10-28.endive",
            "created": created, "type": "customer.updated", "livemode": False,
            "data": {"object": {"id": f"cus_bench_{run}_{n:06d}", "object": "customer", "email": f"ap{n}@bench.test"}},
        }
        for n in range(others)
    ]  # fmt: skip
    events = []
    for n in range(max(len(successes), len(ignored))):
        events.extend(e[n] for e in (successes, ignored) if n < len(e))
    return events


def sign(body: bytes, timestamp: int) -> str:
    """``Stripe-Signature`` as Stripe computes it (stripe/_webhook.py ``_compute_signature``)."""
    signed = f"{timestamp}.".encode() + body
    return f"t={timestamp},v1={hmac.new(WEBHOOK_SECRET.encode(), signed, hashlib.sha256).hexdigest()}"


# --- gunicorn and the worker ----------------------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-LOG_TAIL:]

    def stop(self) -> None:
        """Graceful (SIGTERM): a request or task in progress finishes first."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def child_env() -> dict[str, str]:
    from cryptography.fernet import Fernet

    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.webhooks_settings",
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "CREDENTIALS_KEYS": Fernet.generate_key().decode(),
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "0",
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gunicorn_defaults() -> dict[str, Any]:
    """What ``gunicorn.conf.py`` sets (read as gunicorn reads it: a Python file)."""
    import runpy

    return runpy.run_path(str(GUNICORN_CONFIG))


def server_start(folder: Path, workers: int, threads: int) -> tuple[Child, str]:
    port = free_port()
    log = folder / "gunicorn.log"
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 (fixed arguments, this interpreter's gunicorn)
            [sys.executable, "-m", "gunicorn", "aggregator.wsgi:application", "--bind", f"127.0.0.1:{port}",
             "--config", str(GUNICORN_CONFIG), "--workers", str(workers), "--threads", str(threads),
             "--backlog", "2048", "--log-level", "warning"],
            cwd=ROOT, env=child_env(), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = Child("gunicorn", process, log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_READY_SECONDS
    while True:
        if process.poll() is not None:
            sys.exit(f"gunicorn exited with {process.returncode}:\n{server.tail()}")
        try:
            if httpx.post(f"{url}/bench/bare/", content=b"{}", timeout=2).status_code == 200:
                return server, url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            sys.exit(f"gunicorn did not answer within {SERVER_READY_SECONDS:.0f} s:\n{server.tail()}")
        time.sleep(0.2)


def worker_start(folder: Path) -> Child:
    from aggregator.celery import app as celery_app

    name = f"bench-webhooks@{socket.gethostname()}"
    log = folder / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 (fixed arguments, this interpreter's celery)
            [sys.executable, "-m", "celery", "-A", "aggregator", "worker", "-Q", QUEUE, "--pool", "prefork",
             "--concurrency", "2", "--loglevel", "WARNING", "-n", name,
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=ROOT, env=child_env(), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    worker = Child(name, process, log)
    deadline = time.monotonic() + WORKER_READY_SECONDS
    while not celery_app.control.ping(destination=[name], timeout=0.5):
        if process.poll() is not None or time.monotonic() > deadline:
            worker.stop()
            sys.exit(f"The Celery worker did not start:\n{worker.tail()}")
    return worker


# --- CPU accounting (Linux /proc; zeros elsewhere) -----------------------------------------------------------------


def process_cpu(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds of each live process."""
    found = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        found[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return found


def backend_pids() -> list[int]:
    """The PostgreSQL backends serving the bench database, other than this process's own."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return [row[0] for row in cursor.fetchall()]


@dataclass
class Cpu:
    server: float  # gunicorn master and workers
    database: float  # PostgreSQL backends of the bench database (when PostgreSQL runs on this machine)


class CpuMeter:
    """CPU seconds the server and the database spend between ``start`` and ``stop``. Backends opened during
    the burst count whole; the client's and Redis's own CPU are not counted."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid

    def start(self) -> None:
        self.server_before = sum(process_cpu(process_tree(self.server_pid)).values())
        self.backends_before = process_cpu(backend_pids())

    def stop(self) -> Cpu:
        server = sum(process_cpu(process_tree(self.server_pid)).values()) - self.server_before
        after = process_cpu(backend_pids())
        database = sum(cpu - self.backends_before.get(pid, 0.0) for pid, cpu in after.items())
        return Cpu(server, database)


# --- the client ---------------------------------------------------------------------------------------------------


@dataclass
class Burst:
    seconds: float
    statuses: dict[int, int]
    duplicates: int
    cpu: Cpu | None = None
    client_cpu: float = 0.0  # this process: the HTTP client (and signing)

    def cpu_ms(self, count: int) -> float:
        """Server and database CPU milliseconds per event."""
        return (self.cpu.server + self.cpu.database) * 1000 / count if self.cpu else 0.0

    def rate(self, count: int) -> float:
        return count / self.seconds if self.seconds else 0.0


def requests_build(url: str, bodies: list[bytes], *, signed: bool) -> list[bytes]:
    """Each delivery as the bytes sent: an HTTP/1.1 POST on its own connection (``Connection: close``,
    for both views alike), signed when ``signed`` (as Stripe signs, a moment before sending: the
    server allows 5 minutes). Built before the timed part: the signing is Stripe's work, not ours."""
    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path
    requests = []
    for body in bodies:
        extra = f"Stripe-Signature: {sign(body, int(time.time()))}\r\n" if signed else ""
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n"
        )
        requests.append(head.encode() + body)
    return requests


async def _post(host: str, port: int, request: bytes) -> bytes:
    """Send one request and read the whole answer. Hand-written so the client costs a fraction of what
    the server does: with a full HTTP client the bare view's rate would be the client's."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        return await reader.read()
    finally:
        writer.close()


async def _burst(url: str, requests: list[bytes], *, concurrency: int) -> tuple[float, list[bytes | None]]:
    """Seconds for all the requests, ``concurrency`` in flight, and each answer (None: failed)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    answers: list[bytes | None] = [None] * len(requests)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(requests)):
        queue.put_nowait(index)

    async def run() -> None:
        while not queue.empty():
            index = queue.get_nowait()
            try:
                answers[index] = await asyncio.wait_for(_post(host, port, requests[index]), timeout=60)
            except (OSError, TimeoutError) as exc:
                print(f"  request failed: {type(exc).__name__}: {exc}")

    start = time.perf_counter()
    await asyncio.gather(*(run() for _ in range(concurrency)))
    return time.perf_counter() - start, answers


def burst(url: str, bodies: list[bytes], *, signed: bool, concurrency: int, meter: CpuMeter | None = None) -> Burst:
    requests = requests_build(url, bodies, signed=signed)
    if meter is not None:
        meter.start()
    client_cpu = time.process_time()
    seconds, answers = asyncio.run(_burst(url, requests, concurrency=concurrency))
    client_cpu = time.process_time() - client_cpu
    cpu = meter.stop() if meter is not None else None
    # The answers are read after the timed part (the gateway's side of the exchange).
    statuses: dict[int, int] = {}
    duplicates = 0
    for answer in answers:
        status_line, _, rest = (answer or b"").partition(b"\r\n")
        try:
            status = int(status_line.split(b" ", 2)[1])
        except (IndexError, ValueError):
            status = -1
        statuses[status] = statuses.get(status, 0) + 1
        if signed and status == 200 and json.loads(rest.partition(b"\r\n\r\n")[2]).get("duplicate"):
            duplicates += 1
    return Burst(seconds, statuses, duplicates, cpu, client_cpu)


# --- processing and the proof --------------------------------------------------------------------------------------


def wait_processed(expected: int) -> float:
    """Seconds until every stored event left ``received`` (exits if progress stalls)."""
    from billing.payments.records import WebhookEvent

    start = last_change = time.perf_counter()
    left = previous = expected
    while left:
        time.sleep(0.2)
        left = WebhookEvent.objects.filter(status=WebhookEvent.Status.RECEIVED).count()
        if left != previous:
            previous, last_change = left, time.perf_counter()
        elif time.perf_counter() - last_change > PROCESS_STALL_SECONDS:
            sys.exit(f"Processing stalled with {left} events still received.")
    return time.perf_counter() - start


def proof(events: list[dict[str, Any]], sent: int, duplicates: int, webhook: Burst) -> list[tuple[str, bool]]:
    from django.db.models import Count, F, Max

    from billing.invoicing.models import Invoice
    from billing.payments.records import Payment, WebhookEvent

    successes = sum(1 for e in events if e["type"] == "payment_intent.succeeded")
    stored = WebhookEvent.objects.filter(gateway="stripe")
    by_status = dict(stored.order_by().values_list("status").annotate(n=Count("pk")).values_list("status", "n"))
    invoices = Invoice.objects.filter(organization__slug=ORG_SLUG)
    checks = [
        (f"{sent} deliveries answered 200", webhook.statuses == {200: sent}),
        (f"{duplicates} redeliveries answered duplicate=true", webhook.duplicates == duplicates),
        (f"{len(events)} WebhookEvent rows, one per event id",
         stored.count() == len(events) == stored.values("event_id").distinct().count()),
        (f"{successes} processed, {len(events) - successes} ignored, none left or failed",
         by_status == {"processed": successes, "ignored": len(events) - successes}),
        ("every event processed in exactly one attempt", stored.aggregate(m=Max("attempts"))["m"] == 1
         and not stored.exclude(attempts=1).exists()),
        (f"{successes} payments, one per success event",
         Payment.objects.filter(invoice__organization__slug=ORG_SLUG, status="succeeded").count() == successes),
        (f"{successes} invoices paid exactly their amount",
         invoices.filter(status="paid", amount_paid=F("amount_due")).count() == invoices.count() == successes),
    ]  # fmt: skip
    return checks


# --- main ---------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2000, help="deliveries in each burst (default 2000)")
    parser.add_argument("--duplicates", type=int, default=200, help="of them, second deliveries (default 200)")
    parser.add_argument("--rounds", type=int, default=3, help="webhook bursts, each between two bare ones (default 3)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (default 16)")
    web = gunicorn_defaults()
    parser.add_argument(
        "--workers",
        type=int,
        default=web["workers"],
        help=f"gunicorn worker processes (default {web['workers']}, from gunicorn.conf.py)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=web["threads"],
        help=f"threads per worker (default {web['threads']}, from gunicorn.conf.py)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()  # fmt: skip
    if not 0 <= args.duplicates < args.events:
        parser.error("--duplicates must be at least 0 and less than --events")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    config, _created = database_prepare(
        os.environ["DATABASE_URL"], purpose=PURPOSE, default_name=BENCH_DATABASE, recreate=True
    )
    broker_prepare(os.environ["CELERY_BROKER_URL"], default_url=DEFAULT_BROKER)
    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connections

    settings.DEBUG = False  # the bench process's own query log would only grow
    folder = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    try:
        print(f"Load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
        call_command("migrate", verbosity=0)
        unique = args.events - args.duplicates
        paid = unique // 2
        events: list[dict[str, Any]] = []
        rounds: list[list[bytes]] = []  # each round's deliveries: its own events, then redeliveries
        for run in range(args.rounds):
            these = events_build(invoices_create(paid, offset=run * paid), unique - paid, run)
            events += these
            bodies = [json.dumps(e, separators=(",", ":")).encode() for e in these]
            rounds.append(bodies + bodies[: args.duplicates])  # Stripe delivering again, after the originals
        warmup = [
            {"id": f"evt_bench_warmup_{n:04d}", "object": "event", "created": int(time.time()),
             "type": "customer.updated", "data": {"object": {"id": f"cus_bench_warmup_{n:04d}", "object": "customer"}}}
            for n in range(20 * args.workers)
        ]  # fmt: skip
        connections.close_all()

        server, url = server_start(folder, args.workers, args.threads)
        try:
            # Every worker opens its database and broker connections before the timed bursts.
            warm = [json.dumps(e, separators=(",", ":")).encode() for e in warmup]
            burst(f"{url}/bench/bare/", warm, signed=False, concurrency=args.concurrency)
            burst(f"{url}/webhooks/stripe/", warm, signed=True, concurrency=args.concurrency)
            meter = CpuMeter(server.process.pid)

            def bare() -> Burst:
                return burst(f"{url}/bench/bare/", rounds[0], signed=False, concurrency=args.concurrency, meter=meter)

            bares, webhooks = [bare()], []
            for bodies in rounds:
                webhooks.append(
                    burst(f"{url}/webhooks/stripe/", bodies, signed=True, concurrency=args.concurrency, meter=meter)
                )
                bares.append(bare())
        finally:
            server.stop()
        n = args.events
        print(
            f"Bursts: {n} deliveries each ({unique} events: {paid} payment_intent.succeeded, {unique - paid} "
            f"customer.updated; {args.duplicates} redelivered), {args.concurrency} in flight, gunicorn "
            f"{args.workers} {web['worker_class']} workers x {args.threads} threads; bare, then {args.rounds} x "
            f"(webhook, bare)"
        )
        print(f"  bare view        {bare_line(bares[0], n)}")
        ratios, cpu_ratios = [], []
        for run, webhook in enumerate(webhooks):
            around = bares[run : run + 2]
            ratios.append(webhook.rate(n) / max(b.rate(n) for b in around))
            cpu_ratios.append(min(b.cpu_ms(n) for b in around) / webhook.cpu_ms(n) if webhook.cpu_ms(n) else 0.0)
            print(
                f"  /webhooks/stripe {webhook.rate(n):8.1f} events/s, CPU {webhook.cpu_ms(n):.2f} ms per event "
                f"(PostgreSQL {(webhook.cpu.database if webhook.cpu else 0.0) * 1000 / n:.2f}), client "
                f"{webhook.client_cpu * 1000 / n:.2f} ms; / the faster bare run beside it: {ratios[-1]:.2f} "
                f"(CPU time {cpu_ratios[-1]:.2f})"
            )
            print(f"  bare view        {bare_line(bares[run + 1], n)}")
        ratio = statistics.median(ratios)
        print(
            f"  webhook / bare   {ratio:8.2f}   (median of the {args.rounds} rounds; lowest {min(ratios):.2f})   "
            f"goal >= {GOAL}: {'goal met' if ratio >= GOAL else 'goal missed'} "
            f"(in server + database CPU time: {statistics.median(cpu_ratios):.2f})"
        )

        worker = worker_start(folder)
        try:
            seconds = wait_processed(len(events) + len(warmup))
        finally:
            worker.stop()
        processed = len(events) + len(warmup)
        print(
            f"Processing: one Celery worker (2 processes) took {seconds:.1f} s for {processed} events "
            f"({processed / seconds:.1f} events/s), {len(warmup)} of them the warm-up's"
        )
        answered = Burst(sum(w.seconds for w in webhooks), {}, sum(w.duplicates for w in webhooks))
        for webhook in webhooks:
            for status, count in webhook.statuses.items():
                answered.statuses[status] = answered.statuses.get(status, 0) + count
        checks = proof(events + warmup, n * args.rounds, args.duplicates * args.rounds, answered)
        for label, ok in checks:
            print(f"  {'ok    ' if ok else 'FAILED'} {label}")
        print(f"Load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
        connections.close_all()
        if not all(ok for _label, ok in checks):
            sys.exit(1)
    finally:
        if not args.keep:
            connections.close_all()
            database_drop(config)


def bare_line(run: Burst, count: int) -> str:
    return (
        f"{run.rate(count):8.1f} events/s, CPU {run.cpu_ms(count):.2f} ms per event, client "
        f"{run.client_cpu * 1000 / count:.2f} ms"
    )


if __name__ == "__main__":
    main()

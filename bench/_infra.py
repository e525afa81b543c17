"""What the PostgreSQL + Redis benchmarks share: their own database and Redis database (refusing
anything else), and where the machine's CPU goes while they run (Linux /proc)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import environ
import psycopg
import redis
from psycopg import sql

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
CPU_SAMPLE_SECONDS = 1.0


# --- the bench's own database and broker ---------------------------------------------------------------------


def server_params(config: dict[str, Any]) -> dict[str, Any]:
    params = {"host": config["HOST"], "port": config["PORT"], "user": config["USER"], "password": config["PASSWORD"]}
    return {key: value for key, value in params.items() if value not in ("", None)}


def postgres_config(url: str, *, purpose: str, default_name: str) -> dict[str, Any]:
    """The Django settings of ``url``; refuses anything but PostgreSQL, saying why the bench needs it."""
    config = environ.Env.db_url_config(url)
    if config["ENGINE"] != "django.db.backends.postgresql":
        sys.exit(
            f"{purpose}, but DATABASE_URL points at {config['ENGINE'].rsplit('.', 1)[-1]}. Unset DATABASE_URL to use "
            f"postgres://postgres@127.0.0.1:5432/{default_name}, or set it to another PostgreSQL database."
        )
    return config


def database_prepare(
    url: str, *, purpose: str, default_name: str, recreate: bool = False
) -> tuple[dict[str, Any], bool]:
    """The Django settings of ``url`` and whether the database was created (dropped first with ``recreate``)."""
    config = postgres_config(url, purpose=purpose, default_name=default_name)
    name = sql.Identifier(config["NAME"])
    try:
        with psycopg.connect(**server_params(config), dbname="postgres", autocommit=True) as conn:
            if recreate:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [config["NAME"]]).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
    except psycopg.OperationalError as exc:
        sys.exit(f"Cannot reach PostgreSQL at {config['HOST']}:{config['PORT']} as {config['USER']!r}: {exc}")
    return config, not exists


def database_drop(config: dict[str, Any]) -> None:
    with psycopg.connect(**server_params(config), dbname="postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(config["NAME"])))


def broker_prepare(url: str, *, default_url: str) -> redis.Redis:
    """A client of the bench's own Redis database, flushed; refuses any other broker and Redis database 0."""
    parts = urlsplit(url)
    db = parts.path.strip("/")
    if parts.scheme not in ("redis", "rediss") or not db.isdigit() or int(db) == 0:
        sys.exit(
            f"CELERY_BROKER_URL {url!r} is not a Redis database of the bench's own (the bench runs real workers "
            f"through it and flushes it). Unset it to use {default_url}, or give another database number than 0."
        )
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.RedisError as exc:
        sys.exit(f"Cannot reach Redis at {parts.hostname}:{parts.port or 6379}: {exc}")
    client.flushdb()
    return client


# --- CPU -----------------------------------------------------------------------------------------------------------


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def system_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0, 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (a prefork worker's pool child, gunicorn's workers)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return [pid]
    return [pid, *(p for child in children for p in process_tree(int(child)))]


def cpu_by_process() -> dict[int, tuple[str, float]]:
    """(command name, CPU seconds) of every live process."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                head, tail = (entry / "stat").read_text().rsplit(")", 1)
                fields = tail.split()
                found[int(entry.name)] = (head.split("(", 1)[1], (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
            except (OSError, IndexError, ValueError):
                continue
    return found


def postgres_database(pid: int) -> str:
    """The database a PostgreSQL backend (or autovacuum worker) serves, from its process title; "" for the
    server's background processes."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
    # "postgres: 15/main: postgres aggregator_bench_settle 127.0.0.1(54060) idle", "… autovacuum worker <db>"
    words = title.split()
    if "autovacuum" in words and "worker" in words:
        return words[-1]
    return words[3] if len(words) > 4 and words[0] == "postgres:" and ("(" in words[4] or words[4] == "[local]") else ""


class _Process(Protocol):
    pid: int


class WorkerLike(Protocol):
    name: str
    process: _Process


class CpuWatch:
    """Where the machine's CPU went during a run: the workers, the PostgreSQL backends of the bench's database,
    the rest of PostgreSQL (other databases: other people's work; background processes), Redis, this process, and
    "other": the machine's busy time minus those, i.e. other people's work on the machine and processes that ended.
    Processes are sampled every CPU_SAMPLE_SECONDS, so a backend that ends (a worker's connection recycled after
    CONN_MAX_AGE) is counted up to its last sample."""

    GROUPS = ("workers", "pg_bench", "pg_rest", "redis", "bench")

    def __init__(self, workers: Sequence[WorkerLike], *, database: str) -> None:
        self.workers = workers
        self.database = database
        self.load_before = load_average()
        self.first = cpu_by_process()
        self.last = dict(self.first)
        self.worker_pids: set[int] = set()
        self.pids_by_worker: dict[str, set[int]] = {w.name: set() for w in workers}
        self.bench_backends: set[int] = set()
        self.seen: set[int] = set()
        self.sampled = 0.0
        self.busy, self.total = system_cpu()
        self.sample()

    def sample(self, *, force: bool = False) -> None:
        if not force and time.monotonic() - self.sampled < CPU_SAMPLE_SECONDS:
            return
        self.sampled = time.monotonic()
        for worker in self.workers:
            self.pids_by_worker[worker.name] |= set(process_tree(worker.process.pid))
        self.worker_pids |= {pid for pids in self.pids_by_worker.values() for pid in pids}
        now = cpu_by_process()
        for pid, (name, _seconds) in now.items():
            if pid not in self.seen:
                self.seen.add(pid)
                if name.startswith("postgres") and postgres_database(pid) == self.database:
                    self.bench_backends.add(pid)
        self.last |= now

    def shares(self) -> tuple[dict[str, float], float]:
        """CPU seconds by group, and the machine's busy fraction."""
        self.sample(force=True)
        busy, total = system_cpu()
        shares = dict.fromkeys(self.GROUPS, 0.0)
        for pid, (name, seconds) in self.last.items():
            spent = seconds - self.first.get(pid, (name, 0.0))[1]
            if pid in self.worker_pids:
                shares["workers"] += spent
            elif pid in self.bench_backends:
                shares["pg_bench"] += spent
            elif name.startswith("postgres"):
                shares["pg_rest"] += spent
            elif name.startswith("redis"):
                shares["redis"] += spent
            elif pid == os.getpid():
                shares["bench"] += spent
        shares["other"] = max(0.0, busy - self.busy - sum(shares.values()))
        return shares, (busy - self.busy) / (total - self.total) if total > self.total else 0.0

    def per_worker(self) -> list[float]:
        """CPU seconds of each worker process (with its pool child), in start order: how evenly the work spread."""
        return [
            sum(
                self.last[pid][1] - self.first.get(pid, ("", 0.0))[1]
                for pid in self.pids_by_worker[w.name]
                if pid in self.last
            )
            for w in self.workers
        ]


# --- workers and reports -----------------------------------------------------------------------------------------


class _Stoppable(Protocol):
    process: subprocess.Popen[bytes]


def workers_stop(workers: Sequence[_Stoppable]) -> None:
    """Warm shutdown (SIGTERM): a task in progress finishes first."""
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()


def verdict(met: bool) -> str:
    return "goal met" if met else "goal missed"


def step(message: str, action: Callable[[], Any]) -> Any:
    """Run an untimed preparation step, saying what it is and how long it took."""
    print(f"  … {message}", end="", flush=True)
    start = time.perf_counter()
    result = action()
    print(f" ({time.perf_counter() - start:.1f} s, not timed)", flush=True)
    return result

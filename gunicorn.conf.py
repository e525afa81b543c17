"""gunicorn's settings for the web process: ``gunicorn aggregator.wsgi`` reads this file from the
project folder (gunicorn's default ``./gunicorn.conf.py``); a command-line option overrides it.

Threaded workers (``gthread``): most requests wait on PostgreSQL (a webhook delivery on the commit
of its event row, a portal page on its queries), and a thread waiting on the database leaves the
process to another request, where a sync worker would sit idle. ``bench/webhooks.py`` measures
the webhook intake on this configuration.

Environment: ``WEB_CONCURRENCY`` worker processes (default: cores + 1), ``GUNICORN_THREADS``
threads each (default 4; every thread holds its own database connection, so the database needs
``WEB_CONCURRENCY x GUNICORN_THREADS`` connections for the web, plus the workers'),
``GUNICORN_BIND`` (default ``0.0.0.0:8000``), ``GUNICORN_TIMEOUT`` seconds a request may take
(default 30). Each worker loads what its first requests would otherwise load before it takes
them (``post_worker_init``, ``aggregator/warmup.py``).
"""

import os

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY") or (os.cpu_count() or 1) + 1)
threads = int(os.environ.get("GUNICORN_THREADS") or 4)
timeout = int(os.environ.get("GUNICORN_TIMEOUT") or 30)
# Answers go out whole; behind a proxy keep-alive connections are reused for a few seconds.
keepalive = 5
accesslog = "-" if os.environ.get("GUNICORN_ACCESS_LOG") else None


def post_worker_init(worker: object) -> None:
    """Load the URLconf, the cache backend and Celery's transport now, not in the first requests
    (``aggregator/warmup.py``)."""
    from aggregator.warmup import web_worker_warm

    web_worker_warm()

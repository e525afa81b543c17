"""What a web worker loads before its first request (gunicorn's ``post_worker_init``, see
``gunicorn.conf.py``) instead of during it.

Django imports the URLconf and its views at the first request, the cache backend at the first cache
access, and Celery its broker transport at the first task sent: a few hundred modules, tenths of a
second of CPU that the first requests of every new worker would otherwise pay (a webhook delivery
sends a task; ``bench/webhooks.py`` measured them inside its burst). Connecting to the cache and
the broker here also says at boot, in the log, when one cannot be reached. Nothing here stops the
worker from starting: a service that is down is a warning, and the requests report it as usual.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def web_worker_warm() -> None:
    from django.core.cache import cache
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 (imports the URLconf and every view module)
    try:
        cache.get("warmup:web-worker")  # the backend's modules and its connection pool
    except Exception as exc:
        logger.warning("cache not reachable at worker start: %s", type(exc).__name__)
    import celery.events.dispatcher
    import celery.result  # noqa: F401 (what sending a task returns)
    from celery.contrib.django.task import DjangoTask  # noqa: F401 (delay_on_commit)

    from aggregator.celery import app

    app.tasks  # noqa: B018 (finalizes the app: every task registered)
    app.backend  # noqa: B018 (the result backend's modules)
    try:
        with app.producer_or_acquire() as producer:  # the transport's modules and a pooled connection
            producer.connection.ensure_connection(max_retries=1)
    except Exception as exc:
        logger.warning("broker not reachable at worker start: %s", type(exc).__name__)

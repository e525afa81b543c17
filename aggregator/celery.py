"""The Celery application, wired once for web, worker and beat.

Tasks are envelopes: they take ids, return early when the work is already done and call one
service. Enqueue them with ``task.delay_on_commit(...)`` (Celery's Django task class) so a task
never runs against rows that a rolled-back transaction never wrote.
"""

from __future__ import annotations

import os

from celery import Celery
from kombu import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aggregator.settings")

QUEUES = ("sync", "settlement", "invoicing", "payments", "default")

app = Celery("aggregator", task_cls="celery.contrib.django.task:DjangoTask")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    # A task is acknowledged after it ran, and put back if the worker dies mid-task:
    # every task must therefore be safe to run twice.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_soft_time_limit=5 * 60,
    task_time_limit=6 * 60,
    task_default_queue="default",
    task_queues=[Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES],
    task_routes={
        "providers.*": {"queue": "sync"},
        "billing.ledger.*": {"queue": "settlement"},
        "billing.invoicing.*": {"queue": "invoicing"},
        "billing.payments.*": {"queue": "payments"},
        "billing.topups.*": {"queue": "payments"},
    },
    beat_scheduler="django_celery_beat.schedulers:DatabaseScheduler",
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    timezone="UTC",
)
app.autodiscover_tasks()


@app.on_after_configure.connect
def _create_filesystem_broker_folders(sender: Celery, **_: object) -> None:
    # The embedded (filesystem) broker needs its folders before the first message.
    for key in ("data_folder_in", "data_folder_out", "control_folder"):
        folder = (sender.conf.broker_transport_options or {}).get(key)
        if folder:
            os.makedirs(folder, exist_ok=True)

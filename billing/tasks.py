"""Celery discovers `<app>.tasks`: this module imports the task modules of the billing packages."""

from billing.alerts import tasks as alerts_tasks  # noqa: F401
from billing.fx import tasks as fx_tasks  # noqa: F401
from billing.invoicing import tasks as invoicing_tasks  # noqa: F401
from billing.ledger import tasks as ledger_tasks  # noqa: F401
from billing.payments import tasks as payments_tasks  # noqa: F401
from billing.payments.dunning import tasks as dunning_tasks  # noqa: F401
from billing.topups import tasks as topups_tasks  # noqa: F401

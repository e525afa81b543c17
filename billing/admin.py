"""Admin pages of the billing packages (each registers its own)."""

from billing.alerts import admin as alerts_admin  # noqa: F401
from billing.fx import admin as fx_admin  # noqa: F401
from billing.invoicing import admin as invoicing_admin  # noqa: F401
from billing.ledger import admin as ledger_admin  # noqa: F401
from billing.payments import admin as payments_admin  # noqa: F401
from billing.payments.dunning import admin as dunning_admin  # noqa: F401
from billing.topups import admin as topups_admin  # noqa: F401

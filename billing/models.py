"""Models of the billing packages (ledger, FX, alerts, payments, top-ups), imported for Django."""

from billing.alerts.models import Alert, AlertPolicy  # noqa: F401
from billing.fx.models import FxRate  # noqa: F401
from billing.ledger.models import (  # noqa: F401
    CreditPurchase,
    LedgerAccount,
    LedgerEntry,
    LedgerTransaction,
    Reconciliation,
    VendorFee,
)

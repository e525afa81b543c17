"""Models of the billing packages (ledger, FX, alerts, payments, top-ups), imported for Django."""

from billing.alerts.models import Alert, AlertPolicy  # noqa: F401
from billing.fx.models import FxRate  # noqa: F401
from billing.invoicing.models import CreditNote, Invoice, InvoiceLine, NumberSeries  # noqa: F401
from billing.ledger.models import (  # noqa: F401
    CreditPurchase,
    LedgerAccount,
    LedgerEntry,
    LedgerTransaction,
    Reconciliation,
    VendorFee,
)
from billing.payments.dunning.models import DunningCase, DunningPolicy, DunningStep  # noqa: F401
from billing.payments.models import PaymentMethod  # noqa: F401
from billing.payments.records import Payment, WebhookEvent  # noqa: F401
from billing.topups.models import TopUp, TopUpAttempt, TopUpRule  # noqa: F401

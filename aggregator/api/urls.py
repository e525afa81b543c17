from django.urls import include, path
from rest_framework.routers import DefaultRouter

from aggregator.api.views import MemberViewSet, OrganizationCurrentApi
from billing.alerts.api import AlertViewSet
from billing.invoicing.api import CreditNoteViewSet, InvoiceViewSet
from billing.ledger.api import VendorAccountLedgerViewSet, WalletApi
from billing.payments.api import InvoicePaymentViewSet
from billing.topups.api import PaymentMethodViewSet, TopUpRuleViewSet, TopUpViewSet
from providers.api import (
    CostImportApi,
    CostRecordViewSet,
    CostsDailyApi,
    FocusExportApi,
    SyncRunViewSet,
    VendorAccountViewSet,
)

router = DefaultRouter()
router.register("members", MemberViewSet, basename="member")
router.register("vendor-accounts", VendorAccountViewSet, basename="vendor-account")
router.register("vendor-accounts", VendorAccountLedgerViewSet, basename="vendor-account-ledger")
router.register("alerts", AlertViewSet, basename="alert")
router.register("top-up-rules", TopUpRuleViewSet, basename="top-up-rule")
router.register("top-ups", TopUpViewSet, basename="top-up")
router.register("payment-methods", PaymentMethodViewSet, basename="payment-method")
# Registered before InvoiceViewSet so the API root lists "invoices" once, for the main viewset.
router.register("invoices", InvoicePaymentViewSet, basename="invoice-payment")
router.register("invoices", InvoiceViewSet, basename="invoice")
router.register("credit-notes", CreditNoteViewSet, basename="credit-note")
router.register("sync-runs", SyncRunViewSet, basename="sync-run")
router.register("cost-records", CostRecordViewSet, basename="cost-record")
router.register("costs/daily", CostsDailyApi, basename="costs-daily")

app_name = "api"
urlpatterns = [
    path("organizations/current/", OrganizationCurrentApi.as_view(), name="organization-current"),
    path("wallet/", WalletApi.as_view(), name="wallet"),
    path("exports/focus.csv", FocusExportApi.as_view(), name="export-focus"),
    path("imports/costs/", CostImportApi.as_view(), name="import-costs"),
    path("", include(router.urls)),
]

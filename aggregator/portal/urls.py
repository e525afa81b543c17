from django.contrib.auth import views as auth_views
from django.urls import path

from aggregator.portal import invoices, payment_methods, paypal, views

app_name = "portal"
urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("organization/switch/", views.organization_switch, name="organization-switch"),
    path("invoices/", invoices.InvoiceListView.as_view(), name="invoices"),
    path("invoices/<int:pk>/", invoices.InvoiceDetailView.as_view(), name="invoice-detail"),
    path("invoices/<int:pk>/pdf/", invoices.InvoicePdfView.as_view(), name="invoice-pdf"),
    path("invoices/<int:pk>/pay/", invoices.InvoicePayView.as_view(), name="invoice-pay"),
    path("invoices/<int:pk>/pay/intent/", invoices.InvoicePayIntentView.as_view(), name="invoice-pay-intent"),
    path("invoices/<int:pk>/pay/confirm/", invoices.InvoicePayConfirmView.as_view(), name="invoice-pay-confirm"),
    path("invoices/<int:pk>/pay/status/", invoices.InvoicePayStatusView.as_view(), name="invoice-pay-status"),
    path("invoices/<int:pk>/pay/paypal/", paypal.InvoicePayPalStartView.as_view(), name="invoice-paypal-start"),
    path(
        "invoices/<int:pk>/pay/paypal/return/", paypal.InvoicePayPalReturnView.as_view(), name="invoice-paypal-return"
    ),
    path("payment-methods/", payment_methods.PaymentMethodListView.as_view(), name="payment-methods"),
    path("payment-methods/setup/", payment_methods.PaymentMethodSetupView.as_view(), name="payment-method-setup"),
    path(
        "payment-methods/setup/finish/",
        payment_methods.PaymentMethodSetupFinishView.as_view(),
        name="payment-method-setup-finish",
    ),
    path(
        "payment-methods/<int:pk>/default/",
        payment_methods.PaymentMethodActionView.as_view(action="default"),
        name="payment-method-default",
    ),
    path(
        "payment-methods/<int:pk>/fallback/",
        payment_methods.PaymentMethodActionView.as_view(action="fallback"),
        name="payment-method-fallback",
    ),
    path(
        "payment-methods/<int:pk>/remove/",
        payment_methods.PaymentMethodActionView.as_view(action="remove"),
        name="payment-method-remove",
    ),
]

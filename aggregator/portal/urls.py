from django.contrib.auth import views as auth_views
from django.urls import path

from aggregator.portal import (
    accounts,
    confirm,
    credits,
    invoices,
    payment_methods,
    paypal,
    security,
    team,
    usage,
    views,
)

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
    path("payments/confirm/<str:reference>/", confirm.PaymentConfirmView.as_view(), name="payment-confirm"),
    path(
        "payments/confirm/<str:reference>/intent/",
        confirm.PaymentConfirmIntentView.as_view(),
        name="payment-confirm-intent",
    ),
    path(
        "payments/confirm/<str:reference>/status/",
        confirm.PaymentConfirmStatusView.as_view(),
        name="payment-confirm-status",
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

# Vendor accounts, credits, usage, team, billing profile, password reset and two-factor sign-in.
urlpatterns += [
    path("vendor-accounts/", accounts.VendorAccountListView.as_view(), name="vendor-accounts"),
    path("vendor-accounts/link/", accounts.VendorAccountLinkView.as_view(), name="vendor-account-link"),
    path("vendor-accounts/<int:pk>/", accounts.VendorAccountDetailView.as_view(), name="vendor-account"),
    path("vendor-accounts/<int:pk>/test/", accounts.VendorAccountTestView.as_view(), name="vendor-account-test"),
    path("vendor-accounts/<int:pk>/sync/", accounts.VendorAccountSyncView.as_view(), name="vendor-account-sync"),
    path(
        "vendor-accounts/<int:pk>/disconnect/",
        accounts.VendorAccountDisconnectView.as_view(),
        name="vendor-account-disconnect",
    ),
    path("credits/", credits.CreditsView.as_view(), name="credits"),
    path("credits/purchases/", credits.PurchaseCreateView.as_view(), name="credit-purchase"),
    path("credits/top-up-rules/new/", credits.TopUpRuleCreateView.as_view(), name="top-up-rule-new"),
    path("credits/top-up-rules/<int:pk>/", credits.TopUpRuleEditView.as_view(), name="top-up-rule"),
    path("credits/top-up-rules/<int:pk>/toggle/", credits.TopUpRuleToggleView.as_view(), name="top-up-rule-toggle"),
    path("usage/", usage.UsageView.as_view(), name="usage"),
    path("usage/costs.csv", usage.UsageCsvView.as_view(), name="usage-csv"),
    path("usage/focus.csv", usage.UsageFocusView.as_view(), name="usage-focus"),
    path("team/", team.TeamView.as_view(), name="team"),
    path("team/invite/", team.InviteView.as_view(), name="team-invite"),
    path("team/invitations/revoke/", team.InvitationRevokeView.as_view(), name="invitation-revoke"),
    path("team/members/<int:pk>/role/", team.MemberRoleView.as_view(), name="member-role"),
    path("team/members/<int:pk>/remove/", team.MemberRemoveView.as_view(), name="member-remove"),
    path("invitations/<str:token>/", team.InvitationAcceptView.as_view(), name="invitation-accept"),
    path("billing-profile/", team.BillingProfileView.as_view(), name="billing-profile"),
    path("login/verify/", security.LoginVerifyView.as_view(), name="login-verify"),
    path("security/", security.SecurityView.as_view(), name="security"),
    path("password-reset/", security.PasswordResetView.as_view(), name="password-reset"),
    path("password-reset/sent/", security.PasswordResetDoneView.as_view(), name="password-reset-done"),
    path(
        "password-reset/<uidb64>/<token>/",
        security.PasswordResetConfirmView.as_view(),
        name="password-reset-confirm",
    ),
    path("password-reset/done/", security.PasswordResetCompleteView.as_view(), name="password-reset-complete"),
]

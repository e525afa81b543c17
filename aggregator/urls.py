from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import include, path
from django.views import defaults
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from aggregator.api.exceptions import json_not_found, json_server_error
from aggregator.system import views as system_views
from aggregator.tenancy import admin_login
from billing.payments.webhooks import paypal_webhook, stripe_webhook

admin.site.site_header = "AI Invoice Aggregator: operator console"
admin.site.site_title = "Operator console"
admin_login.install(admin.site)

urlpatterns = [
    path("healthz", system_views.healthz, name="healthz"),
    path("ops/worker-check/", system_views.worker_check, name="worker-check"),
    path("webhooks/stripe/", stripe_webhook, name="stripe-webhook"),
    path("webhooks/paypal/", paypal_webhook, name="paypal-webhook"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/v1/", include("aggregator.api.urls")),
    path("i18n/", include("django.conf.urls.i18n")),
    path("", include("aggregator.portal.urls")),
]


def handler404(request: HttpRequest, exception: Exception) -> HttpResponse:
    if request.path.startswith("/api/"):
        return json_not_found(request, exception)
    return defaults.page_not_found(request, exception)


def handler500(request: HttpRequest) -> HttpResponse:
    if request.path.startswith("/api/"):
        return json_server_error(request)
    return defaults.server_error(request)

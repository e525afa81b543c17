"""URLconf of ``bench/webhooks.py`` only: the product's routes plus ``POST /bench/bare/``, a view
that does nothing but answer 200 (the baseline the webhook endpoint is compared with)."""

from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from aggregator import urls as project_urls


@csrf_exempt
def bare(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b'{"received": true}', content_type="application/json")


urlpatterns = [path("bench/bare/", bare, name="bench-bare"), *project_urls.urlpatterns]
handler404 = project_urls.handler404
handler500 = project_urls.handler500

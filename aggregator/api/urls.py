from django.urls import include, path
from rest_framework.routers import DefaultRouter

from aggregator.api.views import MemberViewSet, OrganizationCurrentApi

router = DefaultRouter()
router.register("members", MemberViewSet, basename="member")

app_name = "api"
urlpatterns = [
    path("organizations/current/", OrganizationCurrentApi.as_view(), name="organization-current"),
    path("", include(router.urls)),
]

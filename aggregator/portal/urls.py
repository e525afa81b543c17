from django.contrib.auth import views as auth_views
from django.urls import path

from aggregator.portal import views

app_name = "portal"
urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("organization/switch/", views.organization_switch, name="organization-switch"),
]

from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "aggregator.portal"
    label = "portal"
    verbose_name = "Customer portal"

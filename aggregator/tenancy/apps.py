from django.apps import AppConfig


class TenancyConfig(AppConfig):
    name = "aggregator.tenancy"
    label = "tenancy"
    verbose_name = "Customers and access"

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class TenancyConfig(AppConfig):
    name = "aggregator.tenancy"
    label = "tenancy"
    verbose_name = "Customers and access"

    def ready(self) -> None:
        from aggregator.tenancy.staff import staff_roles_post_migrate

        # The staff roles (groups "finance" and "support") follow the code on every migrate.
        post_migrate.connect(staff_roles_post_migrate, dispatch_uid="tenancy.staff_roles")

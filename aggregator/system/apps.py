from django.apps import AppConfig
from django.db.models.signals import post_migrate


class SystemConfig(AppConfig):
    name = "aggregator.system"
    label = "system"
    verbose_name = "System health"

    def ready(self) -> None:
        from aggregator.system.schedule import ensure_default_schedule

        post_migrate.connect(ensure_default_schedule, sender=self)

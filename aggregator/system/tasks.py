from celery import shared_task


@shared_task(name="aggregator.system.heartbeat")
def heartbeat_process(heartbeat_id: int) -> None:
    from aggregator.system import services

    services.heartbeat_process(heartbeat_id=heartbeat_id)


@shared_task(name="aggregator.system.heartbeat_periodic")
def heartbeat_periodic() -> None:
    """Scheduled by beat so /healthz can tell whether workers are alive."""
    from aggregator.system import services

    services.heartbeat_request()

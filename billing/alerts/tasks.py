from celery import shared_task


@shared_task(name="billing.alerts.tasks.evaluate_all")
def alerts_evaluate_all_task() -> None:
    """Hourly: re-evaluate every account, so sync failures and exhausted credits are told promptly."""
    from billing.alerts.services import alerts_evaluate_vendor_account
    from providers.models import VendorAccount

    for account in VendorAccount.objects.exclude(status=VendorAccount.Status.DISABLED).select_related("organization"):
        alerts_evaluate_vendor_account(account=account)

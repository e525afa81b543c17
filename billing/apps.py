from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        from billing.alerts.services import alerts_evaluate_vendor_account
        from billing.ledger.flows import AFTER_SETTLEMENT

        def evaluate_alerts(account: object) -> None:
            alerts_evaluate_vendor_account(account=account)  # type: ignore[arg-type]

        if evaluate_alerts.__name__ not in {step.__name__ for step in AFTER_SETTLEMENT}:
            AFTER_SETTLEMENT.append(evaluate_alerts)

from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        from billing.alerts.services import alerts_evaluate_vendor_account
        from billing.ledger.flows import AFTER_SETTLEMENT
        from billing.payments import checks  # noqa: F401  (registers the deploy checks)

        def evaluate_alerts(account: object) -> None:
            alerts_evaluate_vendor_account(account=account)  # type: ignore[arg-type]

        from billing.topups.services import after_settlement as top_ups_after_settlement

        for step in (evaluate_alerts, top_ups_after_settlement):
            if step.__name__ not in {existing.__name__ for existing in AFTER_SETTLEMENT}:
                AFTER_SETTLEMENT.append(step)

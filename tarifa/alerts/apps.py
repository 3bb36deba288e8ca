from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "tarifa.alerts"
    label = "alerts"

    def ready(self) -> None:
        from tarifa.alerts import listeners  # noqa: F401  (registers event listeners)

from django.apps import AppConfig


class CoreConfig(AppConfig):
    """Shared building blocks (no models); registers the `__any` lookup."""

    name = "tarifa.core"
    label = "core"
    verbose_name = "Core"

    def ready(self) -> None:
        from tarifa.core.lookups import register

        register()

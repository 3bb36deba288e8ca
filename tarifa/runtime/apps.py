from django.apps import AppConfig


class RuntimeConfig(AppConfig):
    name = "tarifa.runtime"
    label = "runtime"
    verbose_name = "Background runtime"

    def ready(self) -> None:
        from tarifa.runtime import registry

        registry.autodiscover()

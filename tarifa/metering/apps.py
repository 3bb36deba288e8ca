from django.apps import AppConfig


class MeteringConfig(AppConfig):
    name = "tarifa.metering"
    label = "metering"
    verbose_name = "Usage metering"

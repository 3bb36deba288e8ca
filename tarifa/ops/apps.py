from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "tarifa.ops"
    label = "ops"
    verbose_name = "Operations"

from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tarifa.tenants"
    label = "tenants"

from django.apps import AppConfig


class WalletsConfig(AppConfig):
    name = "tarifa.wallets"
    label = "wallets"
    verbose_name = "Prepaid wallets"

from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "tarifa.payments"
    label = "payments"
    verbose_name = "Payments and invoices"

from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "tarifa.events"
    label = "events"
    verbose_name = "Events and webhooks"

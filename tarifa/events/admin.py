from django.contrib import admin

from tarifa.core.admin import URLAdmin
from tarifa.events.models import Event, WebhookAttempt, WebhookDelivery, WebhookEndpoint


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ("uid", "tenant", "type", "created_at")
    list_filter = ("type", "tenant")
    readonly_fields = ("uid", "tenant", "type", "payload", "created_at")


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(URLAdmin):
    list_display = ("id", "tenant", "url", "active", "created_at")
    list_filter = ("active", "tenant")
    exclude = ("secret",)


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    readonly_fields = ("attempted_at", "status_code", "duration_ms", "error", "response_body")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ("id", "endpoint", "event", "status", "attempts", "last_status_code", "delivered_at")
    list_filter = ("status",)
    inlines = [WebhookAttemptInline]

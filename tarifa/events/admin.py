from django import forms
from django.contrib import admin, messages

from tarifa.core.admin import ServiceCheckedForm, URLAdmin
from tarifa.core.errors import DomainError
from tarifa.events.models import Event, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from tarifa.events.services import check_url, clean_event_types, redeliver_webhook, update_webhook_endpoint


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ("uid", "tenant", "type", "created_at")
    list_filter = ("type", "tenant")
    readonly_fields = ("uid", "tenant", "type", "payload", "created_at")


class WebhookEndpointForm(ServiceCheckedForm):
    checked_fields = ("url", "event_types")
    url = forms.URLField(max_length=500, assume_scheme="https")  # as URLAdmin's other URL fields

    class Meta:
        model = WebhookEndpoint
        exclude = ("secret",)

    def check(self, values: dict) -> dict:
        check_url(values.get("url", ""))
        return {"event_types": clean_event_types(values.get("event_types"))}


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(URLAdmin):
    """Endpoints are created through the API, which makes their signing secret and shows it once:
    one added here had none (the form cannot show it), so its webhooks were signed with an empty
    key. Operators change, pause or delete them here."""

    form = WebhookEndpointForm
    list_display = ("id", "tenant", "url", "active", "created_at")
    list_filter = ("active", "tenant")
    readonly_fields = ("tenant",)

    def has_add_permission(self, request):
        return False

    def save_model(self, request, obj, form, change):
        # Through the service, so that resuming an endpoint here sends what its pause held back.
        stored = WebhookEndpoint.objects.get(pk=obj.pk)
        update_webhook_endpoint(endpoint=stored, **{name: getattr(obj, name) for name in form.changed_data})


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    readonly_fields = ("attempted_at", "status_code", "duration_ms", "error", "response_body")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ("id", "endpoint", "event", "status", "attempts", "last_status_code", "delivered_at")
    list_filter = ("status",)
    inlines = [WebhookAttemptInline]
    actions = ["redeliver"]

    @admin.action(description="Send the selected deliveries again")
    def redeliver(self, request, queryset):
        sent = 0
        for delivery in queryset:
            try:
                redeliver_webhook(delivery=delivery)
                sent += 1
            except DomainError as error:
                self.message_user(request, f"Delivery {delivery.id}: {error.message}", messages.WARNING)
        self.message_user(request, f"{sent} deliveries queued to be sent again.")

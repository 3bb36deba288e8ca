from django.contrib import admin

from tarifa.alerts.models import Alert


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ("raised_at", "tenant", "type", "customer", "message")
    list_filter = ("type", "tenant")
    search_fields = ("key", "message", "customer__external_id")
    readonly_fields = ("tenant", "customer", "type", "key", "message", "data", "raised_at")

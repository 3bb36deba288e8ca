from django.contrib import admin

from tarifa.tenants.models import ApiKey, Customer, Tenant


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "timezone", "default_phone_region", "default_currency", "created_at")
    search_fields = ("slug", "name")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("prefix", "tenant", "name", "created_at", "last_used_at", "revoked_at")
    list_filter = ("tenant",)
    readonly_fields = ("prefix", "key_hash", "created_at", "last_used_at")


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ("external_id", "tenant", "name", "email", "phone", "created_at")
    list_filter = ("tenant",)
    search_fields = ("external_id", "name", "email", "phone")

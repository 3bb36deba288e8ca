"""Operators' pages for tenants, their API keys and customers: each form checks what the tenants
service checks (an unknown time zone would break the placement of every record in its month)."""

from django.contrib import admin

from tarifa.core.admin import ServiceCheckedForm
from tarifa.tenants.models import ApiKey, Customer, Tenant
from tarifa.tenants.services import (
    check_region, check_timezone, clean_customer_fields, clean_default_currency, update_customer,
)


class TenantForm(ServiceCheckedForm):
    checked_fields = ("timezone", "default_phone_region", "default_currency")

    class Meta:
        model = Tenant
        fields = "__all__"

    def check(self, values: dict) -> dict:
        check_timezone(values.get("timezone", ""))
        check_region(values.get("default_phone_region", ""))
        return {"default_phone_region": values.get("default_phone_region", "").upper(),
                "default_currency": clean_default_currency(values.get("default_currency", ""))}


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    form = TenantForm
    list_display = ("slug", "name", "timezone", "default_phone_region", "default_currency", "created_at")
    search_fields = ("slug", "name")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("prefix", "tenant", "name", "created_at", "last_used_at", "revoked_at")
    list_filter = ("tenant",)
    readonly_fields = ("tenant", "prefix", "key_hash", "created_at", "last_used_at")

    def has_add_permission(self, request):
        return False  # issued by `tarifa tenant issue-key`, which shows the secret once


class CustomerForm(ServiceCheckedForm):
    checked_fields = ("name", "email", "phone", "metadata", "billing_mode")

    class Meta:
        model = Customer
        fields = "__all__"

    def check(self, values: dict) -> dict:
        tenant = self.cleaned_data.get("tenant") or self.instance.tenant
        return clean_customer_fields(tenant=tenant, fields=values)


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    form = CustomerForm
    list_display = ("external_id", "tenant", "name", "email", "phone", "created_at")
    list_filter = ("tenant",)
    search_fields = ("external_id", "name", "email", "phone")

    def get_readonly_fields(self, request, obj=None):
        # Its usage, summaries and wallet are the tenant's and are found by this id.
        return ("tenant", "external_id") if obj is not None else ()

    def save_model(self, request, obj, form, change):
        if not change:
            return super().save_model(request, obj, form, change)
        # Through the service, so that a customer turned postpaid here has its failed usage charged.
        update_customer(customer=Customer.objects.get(pk=obj.pk),
                        **{name: getattr(obj, name) for name in form.changed_data})

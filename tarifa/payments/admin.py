from copy import copy

from django.contrib import admin

from tarifa.core.admin import ReadOnly, ServiceCheckedForm, URLAdmin
from tarifa.payments.models import (
    CheckLog, CreditNote, GatewayCredential, Invoice, PaymentCheck, PaymentSettings, PaymentTransaction,
)
from tarifa.payments.services.credentials import SETTINGS_FIELDS, check_settings


class CheckInline(ReadOnly, admin.StackedInline):
    model = PaymentCheck
    readonly_fields = ("status", "attempts", "last_checked_at", "next_check_at", "interval_seconds", "expires_at",
                       "last_error", "consecutive_failures", "leased_by")
    exclude = ("tenant",)


class TransactionInline(ReadOnly, admin.TabularInline):
    model = PaymentTransaction
    extra = 0
    readonly_fields = ("code", "status", "gross_amount", "fee_amount", "net_amount", "payment_method", "source", "seen_at")


class CheckLogInline(ReadOnly, admin.TabularInline):
    model = CheckLog
    extra = 0
    readonly_fields = ("checked_at", "source", "outcome", "statuses", "error", "duration_ms")
    ordering = ("-checked_at",)


@admin.register(Invoice)
class InvoiceAdmin(ReadOnly, URLAdmin):
    """Invoices are created, checked and cancelled through the API and CLI, which keep their
    content hash (a retried create compares against it), check row and events; here they are read.
    An invoice added here had no check and no `invoice.created`, and an edited amount no longer
    matched its hash: the ERP retrying its create with the original amount got the edited invoice
    back as a duplicate."""

    list_display = ("reference", "tenant", "customer", "amount", "currency", "status", "due_date", "paid_at")
    list_filter = ("tenant", "status", "gateway")
    search_fields = ("reference", "customer__external_id", "transaction_code")
    readonly_fields = ("status", "paid_at", "gross_amount", "fee_amount", "net_amount", "payment_method",
                       "transaction_code", "paid_via", "reversed_at", "cancelled_at", "content_hash")
    inlines = [CheckInline, TransactionInline, CheckLogInline]


@admin.register(CreditNote)
class CreditNoteAdmin(ReadOnly, admin.ModelAdmin):
    """Made by the monthly close when a summary fell below what its invoices billed; read here."""

    list_display = ("reference", "tenant", "customer", "amount", "currency", "created_at")
    list_filter = ("tenant",)
    search_fields = ("reference", "customer__external_id")


@admin.register(GatewayCredential)
class GatewayCredentialAdmin(URLAdmin):
    list_display = ("tenant", "gateway", "base_url", "status", "consecutive_failures", "last_error")
    list_filter = ("status", "gateway")
    exclude = ("token",)  # write-only: set through PUT /api/v1/payments/gateways/{gateway}
    readonly_fields = ("status", "consecutive_failures", "last_error")

    def has_add_permission(self, request):
        return False


class PaymentSettingsForm(ServiceCheckedForm):
    checked_fields = SETTINGS_FIELDS

    class Meta:
        model = PaymentSettings
        fields = "__all__"

    def check(self, values: dict) -> dict:
        draft = copy(self.instance)
        for name, value in values.items():
            setattr(draft, name, value)
        check_settings(draft)
        return values


@admin.register(PaymentSettings)
class PaymentSettingsAdmin(admin.ModelAdmin):
    """A tenant's check intervals, expiry and monthly-close terms, checked as the API checks them
    (PUT /api/v1/payments/settings); a tenant without a row has the defaults."""

    form = PaymentSettingsForm
    list_display = ("tenant", "progression", "first_interval_seconds", "max_interval_seconds", "expire_after_days",
                    "invoice_due_days", "late_usage_months", "close_grace_days", "settle_every_days",
                    "default_gateway")

    def get_readonly_fields(self, request, obj=None):
        return ("tenant",) if obj is not None else ()

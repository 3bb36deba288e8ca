from django.contrib import admin

from tarifa.core.admin import ReadOnly, URLAdmin
from tarifa.payments.models import CheckLog, CreditNote, GatewayCredential, Invoice, PaymentCheck, PaymentTransaction


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

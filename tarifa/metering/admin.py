from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from tarifa.metering.models import Allowance, FoldBatch, PricePlan, Rate, Subscription, Summary, SummaryLine, UsageRecord

# A plan's page holds a form per rate up to this many. A full international table (thousands of
# prefixes) would take seconds to render and could not be saved (DATA_UPLOAD_MAX_NUMBER_FIELDS):
# its rates are edited in the rate list instead, which the plan's page links to.
MAX_INLINE_RATES = 100


class RateInline(admin.TabularInline):
    model = Rate
    extra = 0


@admin.register(Rate)
class RateAdmin(admin.ModelAdmin):
    list_display = ("plan", "kind", "destination_prefix", "price", "unit", "block_size", "minimum", "increment",
                    "rounding")
    list_filter = ("plan", "kind")
    list_select_related = ("plan",)
    search_fields = ("destination_prefix",)
    ordering = ("plan", "kind", "destination_prefix")


class AllowanceInline(admin.TabularInline):
    model = Allowance
    extra = 0


@admin.register(PricePlan)
class PricePlanAdmin(admin.ModelAdmin):
    list_display = ("code", "tenant", "name", "currency", "updated_at")
    list_filter = ("tenant",)
    readonly_fields = ("rate_list",)

    def get_inlines(self, request, obj):
        if obj is not None and obj.rates.count() > MAX_INLINE_RATES:
            return [AllowanceInline]
        return [RateInline, AllowanceInline]

    @admin.display(description="Rate list")
    def rate_list(self, plan: PricePlan) -> str:
        if plan.pk is None:
            return "-"
        url = reverse("admin:metering_rate_changelist") + f"?plan__id__exact={plan.pk}"
        return format_html('<a href="{}">{} rates</a>', url, plan.rates.count())


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = ("customer", "plan", "starts_on")


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    list_display = ("external_id", "tenant", "customer_ref", "kind", "quantity", "occurred_at", "status",
                    "unrated_reason", "charged_amount")
    list_filter = ("status", "unrated_reason", "tenant", "period")
    search_fields = ("external_id", "customer_ref")


class SummaryLineInline(admin.TabularInline):
    model = SummaryLine
    extra = 0


@admin.register(Summary)
class SummaryAdmin(admin.ModelAdmin):
    list_display = ("customer", "period", "currency", "record_count", "total_amount", "updated_at")
    list_filter = ("period", "tenant")
    inlines = [SummaryLineInline]


@admin.register(FoldBatch)
class FoldBatchAdmin(admin.ModelAdmin):
    list_display = ("id", "record_count", "summary_count", "charged_amount", "folded_by", "created_at")

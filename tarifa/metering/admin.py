from django.contrib import admin

from tarifa.metering.models import Allowance, FoldBatch, PricePlan, Rate, Subscription, Summary, SummaryLine, UsageRecord


class RateInline(admin.TabularInline):
    model = Rate
    extra = 0


class AllowanceInline(admin.TabularInline):
    model = Allowance
    extra = 0


@admin.register(PricePlan)
class PricePlanAdmin(admin.ModelAdmin):
    list_display = ("code", "tenant", "name", "currency", "updated_at")
    list_filter = ("tenant",)
    inlines = [RateInline, AllowanceInline]


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

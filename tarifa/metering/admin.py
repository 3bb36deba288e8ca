"""Operators' pages for metering. Plans, rates, allowances and subscriptions are edited through
forms that check them as the plan service does (an operator's zero increment would otherwise make
every rating of the tenant fail); usage, summaries and fold batches are read only, since they
change through ingestion, folding, reversal and re-rating (`tarifa billing reconcile --fix`
rebuilds a summary from its records)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from tarifa.core.admin import ReadOnly, ServiceCheckedForm
from tarifa.metering.models import Allowance, FoldBatch, PricePlan, Rate, Subscription, Summary, SummaryLine, UsageRecord
from tarifa.metering.rating import ROUNDING_MODES
from tarifa.metering import selectors
from tarifa.metering.services import plans

# A plan's page holds a form per rate up to this many. A full international table (thousands of
# prefixes) would take seconds to render and could not be saved (DATA_UPLOAD_MAX_NUMBER_FIELDS):
# its rates are edited in the rate list instead, which the plan's page links to.
MAX_INLINE_RATES = 100


class RateForm(ServiceCheckedForm):
    rounding = forms.ChoiceField(choices=[(mode, mode) for mode in ROUNDING_MODES], initial="half_up")
    checked_fields = ("kind", "destination_prefix", "description", "unit", "price", "block_size", "minimum",
                      "increment", "tiers", "rounding")

    class Meta:
        model = Rate
        fields = "__all__"

    def check(self, values: dict) -> dict:
        return plans.clean_rate(values)


class AllowanceForm(ServiceCheckedForm):
    checked_fields = ("code", "kinds", "quantity")

    class Meta:
        model = Allowance
        fields = "__all__"

    def check(self, values: dict) -> dict:
        return plans.clean_allowance(values)


class PricePlanForm(ServiceCheckedForm):
    checked_fields = ("code", "currency", "currency_places", "alert_thresholds", "monthly_grant", "grant_expiry_days")

    class Meta:
        model = PricePlan
        fields = "__all__"

    def check(self, values: dict) -> dict:
        return {
            "code": plans.clean_plan_code(values.get("code", "")),
            "currency": plans.clean_currency(values.get("currency", "")),
            "currency_places": plans.clean_currency_places(values.get("currency_places", 2)),
            "alert_thresholds": plans.clean_thresholds(values.get("alert_thresholds")),
            **plans.clean_grant(values.get("monthly_grant"), values.get("grant_expiry_days")),
        }


class SubscriptionForm(ServiceCheckedForm):
    checked_fields = ("customer", "plan")

    class Meta:
        model = Subscription
        fields = "__all__"

    def check(self, values: dict) -> dict:
        plans.check_plan_of_customer(customer=values["customer"], plan=values["plan"])
        return {}


class RateInline(admin.TabularInline):
    model = Rate
    form = RateForm
    extra = 0


@admin.register(Rate)
class RateAdmin(admin.ModelAdmin):
    form = RateForm
    list_display = ("plan", "kind", "destination_prefix", "price", "unit", "block_size", "minimum", "increment",
                    "rounding")
    list_filter = ("plan", "kind")
    list_select_related = ("plan",)
    search_fields = ("destination_prefix",)
    ordering = ("plan", "kind", "destination_prefix")


class AllowanceInline(admin.TabularInline):
    model = Allowance
    form = AllowanceForm
    extra = 0


@admin.register(PricePlan)
class PricePlanAdmin(admin.ModelAdmin):
    form = PricePlanForm
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
    form = SubscriptionForm
    list_display = ("customer", "plan", "starts_on")
    list_select_related = ("customer", "plan")

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        periods = selectors.periods_to_rerate(subscription=obj)
        if periods:  # as the API answers: a change dated back re-rates nothing by itself
            messages.warning(request, f"Usage of {', '.join(periods)} from {obj.starts_on} was rated under another "
                             "plan (or none) and keeps it until re-rated: tarifa usage rerate --period …")


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ("external_id", "tenant", "customer_ref", "kind", "quantity", "occurred_at", "status",
                    "unrated_reason", "charged_amount")
    list_filter = ("status", "unrated_reason", "tenant", "period")
    search_fields = ("external_id", "customer_ref")


class SummaryLineInline(ReadOnly, admin.TabularInline):
    model = SummaryLine
    extra = 0


@admin.register(Summary)
class SummaryAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ("customer", "period", "currency", "record_count", "total_amount", "wallet_paid_amount",
                    "updated_at")
    list_filter = ("period", "tenant")
    inlines = [SummaryLineInline]


@admin.register(FoldBatch)
class FoldBatchAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ("id", "record_count", "summary_count", "charged_amount", "folded_by", "created_at")

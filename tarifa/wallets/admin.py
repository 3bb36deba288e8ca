"""Operators see wallets, their ledgers and audit log; balances change only through the adjust form."""

from __future__ import annotations

import uuid

from django import forms
from django.contrib import admin, messages
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.utils.html import format_html

from tarifa.core.admin import ReadOnly
from tarifa.core.errors import DomainError
from tarifa.wallets.models import AuditEntry, GrantLot, LedgerEntry, Wallet
from tarifa.wallets.services.ledger import adjust_balance


class ReadOnlyInline(ReadOnly, admin.TabularInline):
    extra = 0


class LedgerInline(ReadOnlyInline):
    model = LedgerEntry
    fields = ("created_at", "kind", "amount", "balance_after", "caused_by", "reason")
    readonly_fields = fields
    ordering = ("-id",)


class GrantLotInline(ReadOnlyInline):
    """What is left of each grant and when it expires (spent first, earliest expiry first)."""

    model = GrantLot
    fields = ("entry", "remaining", "expires_at")
    readonly_fields = fields
    ordering = ("-id",)


class AuditInline(ReadOnlyInline):
    model = AuditEntry
    fields = ("created_at", "actor", "action", "before", "after", "reason")
    readonly_fields = fields


class AdjustmentForm(forms.Form):
    amount = forms.DecimalField(max_digits=20, decimal_places=6, help_text="Negative to remove credit.")
    reason = forms.CharField(max_length=200)
    # One per form shown: the form sent twice (a double click, the browser resending it) adjusts once.
    key = forms.CharField(max_length=32, widget=forms.HiddenInput)


@admin.register(Wallet)
class WalletAdmin(admin.ModelAdmin):
    list_display = ("customer", "tenant", "unit", "balance", "credit_limit", "low_balance_threshold", "adjust_link")
    list_filter = ("tenant", "unit")
    search_fields = ("customer__external_id",)
    readonly_fields = ("tenant", "customer", "balance", "granted_remaining", "alert_generation")
    fields = ("tenant", "customer", "unit", "balance", "credit_limit", "low_balance_threshold", "granted_remaining",
              "alert_generation")
    inlines = [LedgerInline, GrantLotInline, AuditInline]

    def has_add_permission(self, request):
        return False  # wallets are created through the API or `tarifa wallet configure`

    def has_change_permission(self, request, obj=None):
        return False  # settings through the API/CLI; balance through the audited adjust form

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="adjust")
    def adjust_link(self, obj):
        return format_html('<a href="{}">adjust balance</a>', reverse("admin:wallets_wallet_adjust", args=[obj.pk]))

    def get_urls(self):
        return [path("<int:wallet_id>/adjust/", self.admin_site.admin_view(self.adjust_view),
                     name="wallets_wallet_adjust"), *super().get_urls()]

    def adjust_view(self, request, wallet_id: int):
        wallet = get_object_or_404(Wallet.objects.select_related("customer"), pk=wallet_id)
        form = AdjustmentForm(request.POST or None, initial={"key": uuid.uuid4().hex})
        if request.method == "POST" and form.is_valid():
            try:
                posted = adjust_balance(customer=wallet.customer, amount=form.cleaned_data["amount"],
                                        reason=form.cleaned_data["reason"], actor=request.user.get_username(),
                                        idempotency_key=f"admin:{form.cleaned_data['key']}")
            except DomainError as exc:
                form.add_error(None, exc.message if exc.code != "idempotency_conflict" else
                               "This form already made an adjustment; open the adjust page again for another.")
            else:
                done = "Adjusted" if posted.created else "Already adjusted (the form was sent twice)"
                messages.success(request, f"{done} by {posted.entry.amount}; balance {posted.entry.balance_after}.")
                return redirect(reverse("admin:wallets_wallet_change", args=[wallet.pk]))
        return render(request, "admin/wallets/adjust.html",
                      {**self.admin_site.each_context(request), "wallet": wallet, "form": form,
                       "opts": self.model._meta, "title": f"Adjust {wallet.customer.external_id}'s wallet"})


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ("created_at", "wallet", "actor", "action", "reason")
    readonly_fields = ("wallet", "entry", "actor", "action", "before", "after", "reason", "created_at")

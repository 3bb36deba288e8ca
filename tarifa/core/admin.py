"""What every operator admin page of Tarifa shares."""

from __future__ import annotations

from django.contrib import admin
from django.db import models


class URLAdmin(admin.ModelAdmin):
    """An address typed without a scheme means https (gateways and webhook endpoints speak TLS);
    Django 6 makes this the default, and 5.2 warns until it is chosen."""

    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}


class ReadOnly:
    """Mixed into a ModelAdmin or an inline whose rows only services write (ledgers, usage,
    summaries): operators look, and correct through the audited commands and API."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

"""What every operator admin page of Tarifa shares."""

from __future__ import annotations

import json
import re

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db import models

from tarifa.core.errors import DomainError
from tarifa.core.text import LONE_SURROGATE, NUL_REFUSED, has_lone_surrogate, has_nonfinite, nul_path


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


class CarriedJSONField(forms.JSONField):
    """A JSON field whose refused value is shown back as JSON text that a page can carry. Django
    writes it out with ensure_ascii=False, so a \\ud800 escape without its pair came back as half
    a character, which no UTF-8 page can hold: the form that refused it failed with a 500."""

    def prepare_value(self, value):
        text = super().prepare_value(value)
        try:
            text.encode("utf-8")  # the text as typed (InvalidJSONInput) always encodes
        except UnicodeEncodeError:
            return json.dumps(value, cls=self.encoder)  # escaped: the operator sees what they typed
        return text


class ServiceCheckedForm(forms.ModelForm):
    """A model form whose values `check` passes through the domain's own checks (the functions its
    services validate with), so that the admin stores only what the API would; a DomainError is
    shown on the field it names (`tiers[0].price` on tiers), and normalised values replace the
    typed ones."""

    checked_fields: tuple[str, ...] = ()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for field in self.fields.values():  # the admin builds these forms' fields, so swap them here
            if type(field) is forms.JSONField:
                field.__class__ = CarriedJSONField

    def check(self, values: dict) -> dict:
        raise NotImplementedError

    def clean(self):
        data = super().clean()
        if self.errors:  # a value the field itself refused (not a number, not JSON) is reported first
            return data
        for name, value in data.items():  # Django's text fields refuse NUL; its JSON fields do not
            if nul_path(value) is not None:
                raise ValidationError({name: f"This value {NUL_REFUSED}"})
            if isinstance(value, (dict, list, float)) and has_nonfinite(value):  # JSON fields read NaN
                raise ValidationError({name: "NaN and Infinity are not numbers that can be stored."})
            if isinstance(value, (dict, list, str)) and has_lone_surrogate(value):  # JSON fields read "\ud800"
                raise ValidationError({name: f"This value {LONE_SURROGATE}."})
        try:
            checked = self.check({name: data[name] for name in self.checked_fields if data.get(name) is not None})
        except DomainError as error:
            field = re.split(r"[.\[]", error.field or "", maxsplit=1)[0]
            raise ValidationError({field: error.message} if field in self.fields else error.message) from error
        data.update({name: value for name, value in checked.items() if name in self.fields})
        return data

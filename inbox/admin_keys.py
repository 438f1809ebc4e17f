"""
The admin of services' API keys (inbox.models.ServiceKey), on djangorestframework-api-key's own
ModelAdmin: the new key is shown once, in a message, after the save; only its hash is stored.
Scopes are checkboxes; the service account is picked by raw id (no select of every user).
Loaded by inbox/admin.py. The library's own APIKey model is unused here and hidden from the admin.
"""

from django import forms
from django.contrib import admin
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey

from .models import ServiceKey


class ServiceKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=ServiceKey.Scope.choices,
        widget=forms.CheckboxSelectMultiple,
        required=False,
        initial=[ServiceKey.Scope.SEND],
        help_text="send: send notifications and provision recipients; mint: tokens for recipients; "
        "recipients: provision and erase recipients.",
    )

    class Meta:
        model = ServiceKey
        fields = ("name", "service", "scopes", "expiry_date", "revoked")

    def clean_scopes(self):
        return sorted(self.cleaned_data["scopes"])


@admin.register(ServiceKey)
class ServiceKeyAdmin(APIKeyModelAdmin):
    form = ServiceKeyForm
    list_display = ("prefix", "name", "service", "scope_list", "created", "last_used_at", "expiry_date", "_has_expired", "revoked")
    list_filter = ("revoked", "created")
    list_select_related = ("service",)
    search_fields = ("name", "prefix", "service__username")
    raw_id_fields = ("service",)

    def get_readonly_fields(self, request, obj=None):
        return (*super().get_readonly_fields(request, obj), "last_used_at")

    @admin.display(description="scopes")
    def scope_list(self, obj) -> str:
        return ", ".join(obj.scopes) or "-"


if admin.site.is_registered(APIKey):
    admin.site.unregister(APIKey)

"""
The operators' view of the stored history.

Large tables stay usable: the changelist counts at most ``COUNT_LIMIT`` rows (a bounded COUNT
instead of COUNT(*) over millions), never runs the "N total" query, joins recipient and sender
in the page query, and picks users by raw id instead of loading every user into a select.
"""

from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db.models import Q
from django.utils.functional import cached_property

from . import services
from .models import IdempotencyKey, Notification


class BoundedCountPaginator(Paginator):
    COUNT_LIMIT = 10_000

    @cached_property
    def count(self):
        return self.object_list[: self.COUNT_LIMIT + 1].count()


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return Notification.State.choices

    def queryset(self, request, queryset):
        value = self.value()
        if value == Notification.State.PENDING:
            return queryset.filter(delivered_at__isnull=True, read_at__isnull=True)
        if value == Notification.State.DELIVERED:
            return queryset.filter(delivered_at__isnull=False, read_at__isnull=True)
        if value == Notification.State.READ:
            return queryset.filter(read_at__isnull=False)
        return queryset


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ("id", "recipient", "title", "category", "state", "created_at")
    list_display_links = ("id", "title")
    list_filter = (StateFilter, "category", "created_at")
    search_fields = ("recipient__username", "title")
    date_hierarchy = "created_at"
    raw_id_fields = ("recipient", "sender")
    list_select_related = ("recipient",)
    readonly_fields = ("created_at", "delivered_at")
    ordering = ("-id",)
    paginator = BoundedCountPaginator
    show_full_result_count = False
    list_per_page = 50
    actions = ["mark_read", "mark_unread", "resend"]

    def delete_model(self, request, obj):
        services.notification_admin_delete(notifications=[obj])

    def delete_queryset(self, request, queryset):
        services.notification_admin_delete(notifications=list(queryset.only("id", "recipient_id")))

    @admin.display(description="state")
    def state(self, obj):
        return obj.state

    def get_search_results(self, request, queryset, search_term):
        # Username matches are exact-or-prefix, so the search uses the username index.
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(Q(recipient__username__istartswith=term) | Q(title__icontains=term)), False

    @admin.action(description="Mark selected notifications read")
    def mark_read(self, request, queryset):
        n = services.notification_admin_set_read(notifications=list(queryset.only("id", "recipient_id")), read=True)
        self.message_user(request, f"{n} notification(s) marked read.", messages.SUCCESS)

    @admin.action(description="Mark selected notifications unread")
    def mark_unread(self, request, queryset):
        n = services.notification_admin_set_read(notifications=list(queryset.only("id", "recipient_id")), read=False)
        self.message_user(request, f"{n} notification(s) marked unread.", messages.SUCCESS)

    @admin.action(description="Resend to the recipients' open clients")
    def resend(self, request, queryset):
        n = services.notification_resend(notifications=list(queryset.select_related("sender")))
        self.message_user(request, f"{n} notification(s) pushed again (expired ones are skipped).", messages.SUCCESS)


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(admin.ModelAdmin):
    list_display = ("key", "sender", "response_status", "created_at")
    search_fields = ("key",)
    raw_id_fields = ("sender",)
    list_select_related = ("sender",)
    readonly_fields = ("sender", "key", "request_hash", "response_status", "response_body", "created_at")
    paginator = BoundedCountPaginator
    show_full_result_count = False

"""
The operators' view of the stored history.

Large tables stay usable: the changelist counts at most ``COUNT_LIMIT`` rows (a bounded COUNT
instead of COUNT(*) over millions), never runs the "N total" query, joins recipient and sender
in the page query, and picks users by raw id instead of loading every user into a select.

Bad input is a 4xx: actions check the ids they are given (``IntegerSelectionMixin``, on Django's
user and group admins too); a NUL in a filter or a search never reaches PostgreSQL
(inbox.middleware.RequestParametersMiddleware). The sign-in (``admin_login``, routed ahead of the
admin's own URLs) has the token endpoint's per-address rate and password-check slots.
"""

from functools import wraps

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import HttpResponse, HttpResponseBadRequest
from django.utils.functional import cached_property
from django.utils.text import Truncator

from . import services
from .api.throttles import AuthThrottle, PasswordChecksBusy, password_check_slot
from .links import MAX_LENGTH as LINK_MAX_LENGTH, validate_link
from .models import IdempotencyKey, Notification
from .services.sending import notification_push_updated

MAX_ID = 2**63 - 1
# The fields an edit shows on the recipient's open pages (a notification.updated frame).
SHOWN_FIELDS = frozenset({"title", "message", "link", "category", "data", "read_at", "expires_at", "sender"})
LIST_TITLE_CHARS = 80


class IntegerSelectionMixin:
    """
    An action on rows picked by id: ids that are not integers of the id's range are a 400. Django
    passed them to ``pk__in`` as they came (``_selected_action=abc``: a ValueError, a 500 on every
    database; an id past 2**63: an OverflowError on SQLite). Every model here has integer ids.
    """

    def response_action(self, request, queryset):
        selected = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
        if not all(s.isascii() and s.isdigit() and int(s) <= MAX_ID for s in selected):
            return HttpResponseBadRequest("The selected rows are named by integer ids.", content_type="text/plain; charset=utf-8")
        return super().response_action(request, queryset)


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


class NotificationForm(forms.ModelForm):
    """
    The admin's notification form, whose link may be a path of the product's site (``/orders/5``)
    as on the REST send (inbox/links.py). The model's field is a URLField, whose validator (run by
    the model's full_clean) refuses a path: ``link`` is excluded from the model's part and declared
    here, so only ``validate_link`` judges it, and ``clean`` puts it on the instance.
    """

    link = forms.CharField(
        max_length=LINK_MAX_LENGTH, required=False, validators=[validate_link],
        help_text="An http(s) URL, or a path of your site that starts with one / (opened relative to the page).",
    )

    class Meta:
        model = Notification
        exclude = ["link"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.initial.setdefault("link", self.instance.link)  # excluded fields get no initial value

    def clean(self):
        cleaned = super().clean()
        if "link" in cleaned:
            self.instance.link = cleaned["link"]
        return cleaned


@admin.register(Notification)
class NotificationAdmin(IntegerSelectionMixin, admin.ModelAdmin):
    form = NotificationForm
    list_display = ("id", "recipient", "short_title", "category", "state", "created_at")
    list_display_links = ("id", "short_title")
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

    @admin.display(description="title", ordering="title")
    def short_title(self, obj):
        # A long title would push the other columns off screen; the change form shows all of it.
        return Truncator(obj.title).chars(LIST_TITLE_CHARS)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        # A new row is pushed by the post_save adapter (inbox/signals.py); an edit of what the
        # recipient sees is shown in place on their open pages.
        if change and SHOWN_FIELDS.intersection(form.changed_data):
            notification_push_updated(notification=obj)

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
class IdempotencyKeyAdmin(IntegerSelectionMixin, admin.ModelAdmin):
    list_display = ("key", "sender", "response_status", "created_at")
    search_fields = ("key",)
    raw_id_fields = ("sender",)
    list_select_related = ("sender",)
    readonly_fields = ("sender", "key", "request_hash", "response_status", "response_body", "created_at")
    paginator = BoundedCountPaginator
    show_full_result_count = False


# Django's own user and group admins, with the same check of the selected ids.
for _model in (get_user_model(), Group):
    if admin.site.is_registered(_model):
        _registered = type(admin.site.get_model_admin(_model))
        admin.site.unregister(_model)
        admin.site.register(_model, type(_registered.__name__, (IntegerSelectionMixin, _registered), {"__module__": __name__}))


def _too_many_sign_ins(wait) -> HttpResponse:
    seconds = max(1, int(round(wait or 1)))
    response = HttpResponse(
        f"Too many sign-in attempts. Try again in {seconds} second{'s' if seconds != 1 else ''}.\n",
        status=429,
        content_type="text/plain; charset=utf-8",
    )
    response["Retry-After"] = str(seconds)
    return response


def throttled_login(login_view):
    """
    The admin's sign-in with the token endpoint's limits: each POST (a password check) counts in the
    same per-address ``auth`` rate (inbox/api/throttles.py), so neither door gives an attacker fresh
    guesses, and holds one of the process' password-check slots or is refused at once (429).
    """

    @wraps(login_view)
    def view(request, *args, **kwargs):
        if request.method != "POST":
            return login_view(request, *args, **kwargs)
        throttle = AuthThrottle()
        if not throttle.allow_request(request, None):
            return _too_many_sign_ins(throttle.wait())
        try:
            with password_check_slot():
                return login_view(request, *args, **kwargs)
        except PasswordChecksBusy as exc:
            return _too_many_sign_ins(exc.wait)

    return view


admin_login = throttled_login(admin.site.login)
from . import admin_keys  # noqa: E402,F401

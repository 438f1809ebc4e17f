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
from .services import keys as feed_keys
from .services.sending import notification_push_updated

MAX_ID = 2**63 - 1
# The fields an edit shows on the recipient's open pages (a notification.updated frame).
SHOWN_FIELDS = frozenset({"title", "message", "link", "category", "data", "read_at", "expires_at", "sender", "key", "group", "actions"})
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
        # seq: the change journal's number, set by the database and inbox/store/journal.py only.
        exclude = ["link", "seq"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.initial.setdefault("link", self.instance.link)  # excluded fields get no initial value

    def clean(self):
        cleaned = super().clean()
        if "link" in cleaned:
            self.instance.link = cleaned["link"]
        return cleaned

    # The feed's fields (issue 21) obey the send's rules (inbox/services/keys.py); blank is none.
    def clean_key(self):
        value = self.cleaned_data.get("key") or ""
        return feed_keys.validate_key(value) if value else ""

    def clean_group(self):
        value = self.cleaned_data.get("group") or ""
        return feed_keys.validate_group(value) if value else ""

    def clean_actions(self):
        value = self.cleaned_data.get("actions")
        return feed_keys.validate_actions(value) if value else []


@admin.register(Notification)
class NotificationAdmin(IntegerSelectionMixin, admin.ModelAdmin):
    form = NotificationForm
    list_display = ("id", "recipient", "short_title", "category", "state", "created_at")
    list_display_links = ("id", "short_title")
    list_filter = (StateFilter, "category", "created_at")
    search_fields = ("recipient__username", "title", "=key", "=group")
    date_hierarchy = "created_at"
    raw_id_fields = ("recipient", "sender")
    list_select_related = ("recipient",)
    # The feed's states (issue 21) are the recipient's doing: shown, not edited here.
    readonly_fields = ("created_at", "delivered_at", "seen_at", "archived_at", "interacted_at")
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


# --- Preferences and the fallbacks (issue 20; inbox/preferences.py, inbox/fallback/) -------------
from django.core.exceptions import ValidationError  # noqa: E402
from django.utils import timezone  # noqa: E402

from .models import CategoryPreference, DeliveryProfile, FallbackDelivery, PushSubscription  # noqa: E402
from .preferences import CHANNELS, is_critical, valid_time_zone  # noqa: E402


class _BoundedChangelist:
    """What every changelist here does on a large table (see the module's docstring)."""

    paginator = BoundedCountPaginator
    show_full_result_count = False


class DeliveryProfileForm(forms.ModelForm):
    class Meta:
        model = DeliveryProfile
        fields = ("user", "time_zone", "quiet_start", "quiet_end")

    def clean(self):
        data = super().clean()
        if "time_zone" in data and not valid_time_zone(data["time_zone"]):
            self.add_error("time_zone", 'An IANA time zone name, such as "Europe/Paris" or "UTC".')
        start, end = data.get("quiet_start"), data.get("quiet_end")
        if (start is None) != (end is None):
            raise ValidationError("Quiet hours need both a start and an end (or neither).")
        if start is not None and start == end:
            raise ValidationError("Quiet hours start and end must differ (a window may wrap midnight: 22:00 to 07:00).")
        return data


@admin.register(DeliveryProfile)
class DeliveryProfileAdmin(IntegerSelectionMixin, _BoundedChangelist, admin.ModelAdmin):
    form = DeliveryProfileForm
    list_display = ("user", "time_zone", "quiet_start", "quiet_end", "updated_at")
    search_fields = ("user__username",)
    raw_id_fields = ("user",)
    list_select_related = ("user",)


class CategoryPreferenceForm(forms.ModelForm):
    class Meta:
        model = CategoryPreference
        fields = ("user", "category", *CHANNELS, "muted_until")

    def clean(self):
        data = super().clean()
        category = data.get("category")
        if category and is_critical(category):
            muted = data.get("muted_until")
            if any(data.get(c) is False for c in CHANNELS) or (muted is not None and muted > timezone.now()):
                raise ValidationError(f"'{category}' is a critical category (INBOX[\"CRITICAL_CATEGORIES\"]): it cannot be turned off or muted.")
        return data


@admin.register(CategoryPreference)
class CategoryPreferenceAdmin(IntegerSelectionMixin, _BoundedChangelist, admin.ModelAdmin):
    form = CategoryPreferenceForm
    list_display = ("user", "category", *CHANNELS, "muted_until", "updated_at")
    list_filter = (*CHANNELS, "category")
    search_fields = ("user__username", "category")
    raw_id_fields = ("user",)
    list_select_related = ("user",)


@admin.register(FallbackDelivery)
class FallbackDeliveryAdmin(IntegerSelectionMixin, _BoundedChangelist, admin.ModelAdmin):
    """Read-only: the record of what each fallback sent, skipped or gave up on, written by the worker."""

    list_display = ("notification_id", "recipient", "channel", "status", "reason", "attempts", "created_at", "sent_at")
    list_display_links = ("notification_id",)
    list_filter = ("channel", "status", "created_at")
    search_fields = ("notification__recipient__username",)
    list_select_related = ("notification__recipient",)

    @admin.display(description="recipient", ordering="notification__recipient__username")
    def recipient(self, obj) -> str:
        return obj.notification.recipient.get_username()

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(PushSubscription)
class PushSubscriptionAdmin(IntegerSelectionMixin, _BoundedChangelist, admin.ModelAdmin):
    """A browser's subscription: made by the browser (POST /api/push-subscriptions/), viewed or removed here."""

    list_display = ("id", "user", "push_service", "user_agent", "created_at", "last_success_at")
    search_fields = ("user__username", "endpoint")
    list_select_related = ("user",)
    readonly_fields = ("user", "endpoint", "p256dh", "auth", "user_agent", "created_at", "last_success_at")

    @admin.display(description="push service")
    def push_service(self, obj) -> str:
        from urllib.parse import urlsplit

        return urlsplit(obj.endpoint).hostname or "?"

    def has_add_permission(self, request) -> bool:
        return False

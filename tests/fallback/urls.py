"""The project's URLs plus the lines the fallbacks ask the lead to add (until they are in the project's)."""

from django.urls import include, path

from inbox.api.preferences import PreferencesView
from inbox.api.push_subscriptions import PushSubscriptionsView
from notifications_site.urls import urlpatterns as site_urlpatterns

urlpatterns = [
    path("api/preferences/", PreferencesView.as_view(), name="preferences"),
    path("api/push-subscriptions/", PushSubscriptionsView.as_view(), name="push-subscriptions"),
    path("", include("inbox.fallback.urls")),
    *site_urlpatterns,
]

from django.urls import path, register_converter

from . import changes, feed, preferences, push_subscriptions, views


class ExternalIdConverter:
    """
    The product's id of a recipient: any characters, '/' included. The server hands Django the path
    percent-decoded (``a%2Fb`` arrives as ``a/b``), so this takes everything up to the route's last
    slash; the view checks the id's length (a 400) and ``reverse()`` percent-encodes what needs it.
    """

    regex = ".+"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(ExternalIdConverter, "external_id")

urlpatterns = [
    path("auth/token/", views.TokenView.as_view(), name="token-obtain"),
    path("auth/token/refresh/", views.TokenRefresh.as_view(), name="token-refresh"),
    path("auth/user-token/", views.UserTokenView.as_view(), name="user-token"),
    path("me/", views.MeView.as_view(), name="me"),
    path("changes/", changes.ChangesView.as_view(), name="changes"),
    path("notifications/", views.NotificationListCreateView.as_view(), name="notification-list"),
    path("notifications/unread-count/", views.UnreadCountView.as_view(), name="notification-unread-count"),
    path("notifications/read-all/", views.NotificationReadAllView.as_view(), name="notification-read-all"),
    path("notifications/seen/", feed.SeenView.as_view(), name="notification-seen"),
    path("notifications/archive/", feed.ArchiveView.as_view(), name="notification-archive"),
    path("notifications/unarchive/", feed.UnarchiveView.as_view(), name="notification-unarchive"),
    path("notifications/by-key/<str:key>/", feed.RetractByKeyView.as_view(), name="notification-retract"),
    path("notifications/groups/<str:group>/read/", feed.GroupReadView.as_view(), name="notification-group-read"),
    path("notifications/<int:pk>/interact/", feed.InteractView.as_view(), name="notification-interact"),
    path("notifications/<int:pk>/", views.NotificationDetailView.as_view(), name="notification-detail"),
    path("notifications/<int:pk>/read/", views.NotificationReadView.as_view(), name="notification-read"),
    path("notifications/<int:pk>/unread/", views.NotificationUnreadView.as_view(), name="notification-unread"),
    path("recipients/<external_id:external_id>/", views.RecipientDetailView.as_view(), name="recipient-detail"),
    path("preferences/", preferences.PreferencesView.as_view(), name="preferences"),
    path("push-subscriptions/", push_subscriptions.PushSubscriptionsView.as_view(), name="push-subscriptions"),
]

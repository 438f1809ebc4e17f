from django.urls import path, register_converter

from . import views


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
    path("notifications/", views.NotificationListCreateView.as_view(), name="notification-list"),
    path("notifications/unread-count/", views.UnreadCountView.as_view(), name="notification-unread-count"),
    path("notifications/read-all/", views.NotificationReadAllView.as_view(), name="notification-read-all"),
    path("notifications/<int:pk>/", views.NotificationDetailView.as_view(), name="notification-detail"),
    path("notifications/<int:pk>/read/", views.NotificationReadView.as_view(), name="notification-read"),
    path("notifications/<int:pk>/unread/", views.NotificationUnreadView.as_view(), name="notification-unread"),
    path("recipients/<external_id:external_id>/", views.RecipientDetailView.as_view(), name="recipient-detail"),
]

from django.urls import path

from . import views

urlpatterns = [
    path("auth/token/", views.TokenView.as_view(), name="token-obtain"),
    path("auth/token/refresh/", views.TokenRefresh.as_view(), name="token-refresh"),
    path("me/", views.MeView.as_view(), name="me"),
    path("notifications/", views.NotificationListCreateView.as_view(), name="notification-list"),
    path("notifications/unread-count/", views.UnreadCountView.as_view(), name="notification-unread-count"),
    path("notifications/read-all/", views.NotificationReadAllView.as_view(), name="notification-read-all"),
    path("notifications/<int:pk>/", views.NotificationDetailView.as_view(), name="notification-detail"),
    path("notifications/<int:pk>/read/", views.NotificationReadView.as_view(), name="notification-read"),
    path("notifications/<int:pk>/unread/", views.NotificationUnreadView.as_view(), name="notification-unread"),
]

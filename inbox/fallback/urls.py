"""
The fallbacks' signed links, at the root of the site: ``path("", include("inbox.fallback.urls"))``.
"""

from django.urls import path

from . import views

urlpatterns = [
    path("email/unsubscribe/<str:token>/", views.unsubscribe, name="inbox-unsubscribe"),
    path("push/ack/", views.push_ack, name="inbox-push-ack"),
]

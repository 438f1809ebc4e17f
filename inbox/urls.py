"""
Inbox's URLconf for a host project: ``path("inbox/", include("inbox.urls"))`` serves the REST API at
``/inbox/api/`` (notifications, unread count, read state, tokens, recipients: inbox/api/urls.py),
and the fallbacks' signed links (``email/unsubscribe/<token>/``, ``push/ack/``), the API
authenticated by the host's own ``REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"]`` (its session,
its JWTs) besides the token endpoints' own. The service mounts it at the root (notifications_site/urls.py),
next to the browser page and the API docs, which stay the service's: the page's script calls
``/api/`` and ``/ws/`` at the site's root.
"""

from django.urls import include, path

urlpatterns = [
    path("api/", include("inbox.api.urls")),
    # The fallbacks' signed links: the e-mail's unsubscribe, the service worker's push ack (inbox/fallback/).
    path("", include("inbox.fallback.urls")),
]

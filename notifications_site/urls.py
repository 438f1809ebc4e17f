from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from inbox.admin import admin_login
from inbox.api.schema import SwaggerUIView
from inbox.views import healthz, inbox_page

handler404 = "inbox.views.not_found"

urlpatterns = [
    path("", inbox_page, name="inbox-page"),
    path("healthz", healthz, name="healthz"),
    # Ahead of admin.site.urls: the same view, with the token endpoint's limits (inbox/admin.py).
    path("admin/login/", admin_login),
    path("admin/", admin.site.urls),
    # The URLconf a host project includes too (inbox/urls.py): the REST API under api/.
    path("", include("inbox.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SwaggerUIView.as_view(url_name="schema"), name="api-docs"),
]

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config import views
from config.admin_login import LockoutAdminLoginForm

admin.site.login_form = LockoutAdminLoginForm

handler400 = "config.errors.json_400"
handler404 = "config.errors.json_404"
handler500 = "config.errors.json_500"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", views.metrics, name="metrics"),
    path("webhooks/stripe", include("billing.webhook_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/v1/", include("licensing.urls")),
    path("api/v1/", include("usage.urls")),
    path("api/v1/", include("billing.urls")),
]

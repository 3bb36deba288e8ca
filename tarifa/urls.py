from django.contrib import admin
from django.urls import path

from tarifa.api import api
from tarifa.ops import views as ops_views
from tarifa.payments import views as payment_views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("health", ops_views.health, name="health"),
    path("metrics", ops_views.metrics, name="metrics"),
    path("webhooks/pagseguro/<slug:tenant>", payment_views.pagseguro_notification, name="pagseguro-webhook"),
]

handler400 = "tarifa.core.views.bad_request"
handler404 = "tarifa.core.views.not_found"

from django.contrib import admin
from django.urls import path

from . import views

app_name = "dashboard"
urlpatterns = [
    # The page goes through the admin's login (anonymous visitors are sent there).
    path("", admin.site.admin_view(views.dashboard_page), name="page"),
    path("live.json", views.live_json, name="live"),
    path("series.json", views.series_json, name="series"),
]

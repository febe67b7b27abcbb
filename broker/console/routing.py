from django.urls import path

from .gateway import console_gateway

websocket_urlpatterns = [
    path("ws/console/<int:desktop_id>/", console_gateway),
]

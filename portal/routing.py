from django.urls import path

from .consumers import LaunchProgressConsumer

websocket_urlpatterns = [
    path("ws/launch/<int:desktop_id>/", LaunchProgressConsumer.as_asgi()),
]

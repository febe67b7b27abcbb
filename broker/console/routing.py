from django.urls import path

from .gateway import ConsoleConsumer

websocket_urlpatterns = [
    path("ws/console/<int:desktop_id>/", ConsoleConsumer.as_asgi()),
]

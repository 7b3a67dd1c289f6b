from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from django.urls import path

from . import consumers, staff
from .origin import OriginValidator

websocket_urlpatterns = [
    path("ws/threads/<int:thread_id>/", consumers.ThreadConsumer.as_asgi()),
    path(staff.PATH, staff.LiveTurnsConsumer.as_asgi()),
]


def websocket_application() -> OriginValidator:
    """Sockets: full Origin checked (web.origin), session user in scope, then the routes."""
    return OriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))

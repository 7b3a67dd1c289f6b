from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from channels.sessions import CookieMiddleware
from django.urls import path, re_path

from . import consumers, staff
from .origin import OriginValidator

websocket_urlpatterns = [
    # The thread socket checks its session itself, with the check it repeats
    # before each frame (web.sessions.SessionCheck), from the cookie alone:
    # Django's user lookup once more in front of it would be a second round
    # of the same queries, and Channels' SessionMiddleware looks at its lazy
    # session on every frame sent (7-9% of a streaming process's CPU).
    path("ws/threads/<int:thread_id>/", CookieMiddleware(consumers.ThreadConsumer.as_asgi())),
    path(staff.PATH, AuthMiddlewareStack(staff.LiveTurnsConsumer.as_asgi())),
    # Anything else, a thread id of more digits than int() takes included: 4404.
    re_path(r"", consumers.NotFoundConsumer.as_asgi()),
]


def websocket_application() -> OriginValidator:
    """Sockets: full Origin checked (web.origin), then the routes, each with the session (and user) it needs."""
    return OriginValidator(URLRouter(websocket_urlpatterns))

"""ASGI entry point: HTTP through Django, WebSockets through Channels, the turn sweeper and the graceful stop."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatproject.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ChannelNameRouter, ProtocolTypeRouter  # noqa: E402

from agents import process  # noqa: E402
from agents.sweeper import SweeperMiddleware, start_when_serving  # noqa: E402
from agents.turn_queue import TURNS_CHANNEL  # noqa: E402
from agents.worker import TurnWorkerConsumer  # noqa: E402
from chatproject import shutdown  # noqa: E402
from web.routing import websocket_application  # noqa: E402


def plain_autobahn_log_arguments() -> None:
    """Have autobahn (daphne's WebSocket protocol) build its debug-log arguments as plain text.

    With click installed (common: many tools bring it), autobahn colours
    them with click.style on every frame it sends, whether its debug lines
    are logged or not, which they never are here.
    """
    from autobahn import util

    util._HAS_CLICK = False


process.tune()
plain_autobahn_log_arguments()
start_when_serving()
shutdown.install()
application = SweeperMiddleware(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            "websocket": websocket_application(),
            # Worker processes (manage.py run_agent_worker) take queued turns here.
            "channel": ChannelNameRouter({TURNS_CHANNEL: TurnWorkerConsumer.as_asgi()}),
        }
    )
)

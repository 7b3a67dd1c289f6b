"""`GET /healthz` for load balancers: 200 when the database and the channel layer both answer, else 503.

No login: it shows nothing but which dependency is down. Each check is
bounded by CHECK_SECONDS, so a hung dependency answers 503, not a timeout.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from chat import selectors

CHECK_SECONDS = 2.0


async def _layer_round_trip() -> None:
    """Send a message to a fresh channel and read it back (channels-redis: a real Redis round trip)."""
    layer = get_channel_layer()
    channel = f"healthz.{uuid.uuid4().hex}"
    await layer.send(channel, {"type": "health.check"})
    await layer.receive(channel)


async def _check(probe: Callable[[], Awaitable[object]]) -> str:
    try:
        await asyncio.wait_for(probe(), CHECK_SECONDS)
    except TimeoutError:
        return f"no answer within {CHECK_SECONDS:g} s"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:200]
    return "ok"


@require_GET
async def healthz(request: HttpRequest) -> JsonResponse:
    checks = {
        # sync_to_async, not database_sync_to_async: the request's own connection,
        # which Django closes at the end of the request as for any view.
        "database": await _check(sync_to_async(selectors.database_answers)),
        "channel_layer": await _check(_layer_round_trip),
    }
    healthy = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if healthy else "unavailable", **checks}, status=200 if healthy else 503)

"""This process's own channel: other processes send it cancels for the turns running here.

A turn stores the name of the channel of the process that runs it on its
assistant message (`Message.runner`), so a cancel made anywhere in a cluster
goes straight to that process, whether or not it holds a socket of the
thread. The database flag read with each heartbeat stays the fallback when
the message is lost or the channel layer is down.
"""

from __future__ import annotations

import asyncio
import logging

from channels.layers import BaseChannelLayer, get_channel_layer

from .registry import registry

logger = logging.getLogger(__name__)

CANCEL = "turn.cancel"
RETRY_SECONDS = 1.0

_name: str = ""
_layer: BaseChannelLayer | None = None
_listener: asyncio.Task | None = None


async def channel_name() -> str:
    """This process's channel, with its listener started on first use; empty when no layer is configured.

    The channel is made again when the layer or the event loop changed
    (tests swap both); a server process keeps one for its life.
    """
    global _name, _layer, _listener
    layer = get_channel_layer()
    if layer is None:
        return ""
    loop = asyncio.get_running_loop()
    if layer is not _layer or _listener is None or _listener.done() or _listener.get_loop() is not loop:
        reset()
        # The default prefix: channels-redis reads every process-local channel
        # through one blocking pop on "specific.<process>!", and a channel of
        # another prefix would hold that pop and starve the sockets' channels.
        _name, _layer = await layer.new_channel(), layer
        _listener = loop.create_task(_listen(layer, _name), name="turn-inbox")
    return _name


async def send_cancel(channel: str, message_id: int) -> None:
    """Ask the process behind `channel` to stop this message's turn; a failure is logged (the flag remains)."""
    if not channel:
        return
    try:
        await get_channel_layer().send(channel, {"type": CANCEL, "message_id": message_id})
    except Exception:
        logger.exception("cancel of message %s not sent to %s", message_id, channel)


async def _listen(layer: BaseChannelLayer, name: str) -> None:
    while True:
        try:
            message = await layer.receive(name)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("turn inbox %s failed; listening again", name)
            await asyncio.sleep(RETRY_SECONDS)
            continue
        if message.get("type") == CANCEL:
            registry.cancel_message(message["message_id"])


def reset() -> None:
    """Stop listening and forget the channel."""
    global _name, _layer, _listener
    if _listener is not None and not _listener.done() and not _listener.get_loop().is_closed():
        _listener.cancel()
    _name, _layer, _listener = "", None, None

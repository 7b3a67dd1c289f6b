"""The Live turns socket (`/ws/staff/live/`): staff only; a snapshot, then the pushes of agents.livefeed.

Checked as the admin checks its pages: a logged-in, active staff user with
the `chat.view_message` permission (close 4401 when nobody is logged in,
4403 otherwise); like the thread socket it closes 4401 when its session
ends (web.sessions). Origins are checked by the router, as for every socket.
Cancelling stays an HTTP POST of the page (the admin's CSRF check).
"""

from __future__ import annotations

import json
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.utils import timezone

from agents.livefeed import STAFF_GROUP
from chat import reports

from . import sessions
from .text import encode_frame

# Routed in web.routing; the Live turns page opens it (web.admin_views).
PATH = "ws/staff/live/"
CLOSE_NOT_AUTHENTICATED = 4401
CLOSE_NOT_STAFF = 4403

alive_turns = database_sync_to_async(reports.live_turns)
asession_user_id = database_sync_to_async(sessions.session_user_id)


@database_sync_to_async
def may_watch(user: Any) -> bool:
    """What `admin_site.admin_view` and the Live turns page require."""
    return bool(user.is_active and user.is_staff and user.has_perm("chat.view_message"))


class LiveTurnsConsumer(AsyncJsonWebsocketConsumer):
    joined = False
    groups_joined: tuple[str, ...] = ()

    async def connect(self) -> None:
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_NOT_AUTHENTICATED)
            return
        if not await may_watch(user):
            await self.close(code=CLOSE_NOT_STAFF)
            return
        session = self.scope.get("session")
        session_key = session.session_key if session is not None else None
        # The session's groups first: a logout from here on closes this socket
        # (web.sessions). Then the staff group, before reading the snapshot: a
        # push committed in between is queued; the page applies it idempotently.
        groups = [sessions.user_group(user.pk)]
        if session_key:
            groups.append(sessions.session_group(session_key))
        groups.append(STAFF_GROUP)
        for group in groups:
            await self.channel_layer.group_add(group, self.channel_name)
        self.groups_joined = tuple(groups)
        self.joined = True
        if session_key and await asession_user_id(session_key) != user.pk:
            await self.close(code=CLOSE_NOT_AUTHENTICATED)  # it ended while this socket was joining
            return
        turns = await alive_turns()
        await self.send_json(
            {
                "type": "live_snapshot",
                "now": timezone.now().isoformat(),
                "recent_seconds": reports.RECENT_SECONDS,
                "turns": turns,
            }
        )

    async def disconnect(self, code: int) -> None:
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def session_close(self, event: dict) -> None:
        """The session or the user's login ended (web.sessions): close at once."""
        self.joined = False  # no frame is answered from here on
        await self.close(code=CLOSE_NOT_AUTHENTICATED)

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return encode_frame(content)  # a stored lone surrogate must not make the frame unsendable

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        """`{"type": "ping"}` is answered with `pong`; anything else is refused with `unknown_type`."""
        if not self.joined:
            return
        try:
            frame = json.loads(text_data) if text_data is not None else None
        except ValueError:
            frame = None
        if isinstance(frame, dict) and frame.get("type") == "ping":
            await self.send_json({"type": "pong"})
        else:
            await self.send_json({"type": "error", "code": "unknown_type", "message": "This socket takes only ping."})

    async def live_event(self, event: dict) -> None:
        await self.send_json(event["frame"])

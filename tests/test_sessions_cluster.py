"""Sessions end everywhere, and the socket cap spans the cluster: two daphne processes on one Redis."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.error
import urllib.parse
import urllib.request

import websockets
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.test import override_settings

from chat.models import Message
from tests.base import PASSWORD, to_thread
from tests.live import HttpSession
from tests.test_e2e import Client, recv
from tests.test_scale_out import TwoProcessTestCase

CLOSE_TIMEOUT = 10


async def close_code(ws) -> int | None:
    """Wait (bounded) for the server to close the socket; its close code."""
    async with asyncio.timeout(CLOSE_TIMEOUT):
        try:
            while True:
                await ws.recv()
        except websockets.ConnectionClosed:
            return ws.close_code


async def answers_ping(ws) -> bool:
    await ws.send(json.dumps({"type": "ping"}))
    while True:
        frame = await recv(ws)
        if frame["type"] == "pong":
            return True


def post_form(http: HttpSession, path: str, fields: dict[str, str]) -> int:
    """POST a form as a browser does, with the CSRF token of the form page (or of the cookie); the status."""
    token = http.cookie("csrftoken")
    try:
        page = http.opener.open(f"{http.base_url}{path}", timeout=30).read().decode()
        found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        token = found.group(1) if found else token
    except urllib.error.HTTPError:
        pass
    data = urllib.parse.urlencode({**fields, "csrfmiddlewaretoken": token or ""}).encode()
    try:
        with http.opener.open(urllib.request.Request(f"{http.base_url}{path}", data=data), timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


class SessionsEndTests(TwoProcessTestCase):
    server_env = {"CHAT_MAX_SOCKETS_PER_USER": "3", "CHAT_SOCKET_LEASE_SECONDS": "3", "LOCAL_MODEL_DELAY_MS": "20"}

    async def sessions(self) -> tuple[Client, Client, Client, int]:
        """alice's session 1 on A and on B (the same cookie), her session 2 on B, and a thread."""
        await sync_to_async(self.make_user)("alice")
        first_a = await Client(self.a, "alice").login()
        first_b = Client(self.b, "alice")
        first_b.http.cookies = first_a.http.cookies
        first_b.http.opener = first_a.http.opener
        second_b = await Client(self.b, "alice").login()
        return first_a, first_b, second_b, await first_a.new_thread()

    async def test_logout_closes_that_sessions_sockets_in_every_process(self):
        """POST /accounts/logout/ on A closes the session's sockets on A and on B (4401); another session stays."""
        first_a, first_b, second_b, thread_id = await self.sessions()
        async with first_a.socket(thread_id) as wa, first_b.socket(thread_id) as wb, second_b.socket(thread_id) as w2:
            for ws in (wa, wb, w2):
                await recv(ws)
            self.assertEqual(await to_thread(post_form, first_a.http, "/accounts/logout/", {}), 302)
            self.assertEqual(await close_code(wa), 4401)
            self.assertEqual(await close_code(wb), 4401)
            self.assertTrue(await answers_ping(w2))

    async def test_password_change_closes_every_socket_of_the_user(self):
        """A password change on B closes the user's sockets of every session on A and B; old sessions stay out."""
        first_a, _, second_b, thread_id = await self.sessions()
        async with first_a.socket(thread_id) as wa, second_b.socket(thread_id) as w2:
            await recv(wa)
            await recv(w2)
            fields = {"old_password": PASSWORD, "new_password1": "a-new-pass-9", "new_password2": "a-new-pass-9"}
            status = await to_thread(post_form, second_b.http, "/accounts/password_change/", fields)
            self.assertEqual(status, 302)
            self.assertEqual(await close_code(wa), 4401)
            self.assertEqual(await close_code(w2), 4401)
        async with first_a.socket(thread_id) as wa:
            self.assertEqual(await close_code(wa), 4401, "the old session no longer logs in")
        async with second_b.socket(thread_id) as w2:
            self.assertEqual((await recv(w2))["type"], "snapshot", "the session that changed it stays logged in")

    async def test_deactivating_the_account_closes_its_sockets(self):
        """Setting is_active off (as the admin does) closes the user's sockets on both processes at once."""
        first_a, _, second_b, thread_id = await self.sessions()
        async with first_a.socket(thread_id) as wa, second_b.socket(thread_id) as w2:
            await recv(wa)
            await recv(w2)
            await to_thread(self.deactivate, "alice")
            self.assertEqual(await close_code(wa), 4401)
            self.assertEqual(await close_code(w2), 4401)

    def deactivate(self, username: str) -> None:
        layers = {
            "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [self.redis_url]}}
        }
        with override_settings(CHANNEL_LAYERS=layers):
            user = get_user_model().objects.get(username=username)
            user.is_active = False
            user.save()

    async def test_a_frame_on_an_ended_session_is_refused(self):
        """A session ended with no signal (its row deleted): the next user_message closes 4401 and stores nothing."""
        first_a, _, _, thread_id = await self.sessions()
        async with first_a.socket(thread_id) as wa:
            await recv(wa)
            await Session.objects.all().adelete()
            await wa.send(json.dumps({"type": "user_message", "content": "hi", "turn_id": "after-logout"}))
            self.assertEqual(await close_code(wa), 4401)
        self.assertEqual(await Message.objects.acount(), 0)

    async def test_socket_cap_counts_every_process_and_forgets_a_killed_one(self):
        """3 sockets on A fill the cap, so B refuses a 4th (4429); after A is killed B accepts within a lease."""
        first_a, _, second_b, thread_id = await self.sessions()
        try:
            sockets = [await first_a.socket(thread_id) for _ in range(3)]
            for ws in sockets:
                await recv(ws)
            async with second_b.socket(thread_id) as refused:
                self.assertEqual(await close_code(refused), 4429)
            await to_thread(self.a.kill)
            async with asyncio.timeout(15):
                while True:
                    async with second_b.socket(thread_id) as ws:
                        try:
                            if (await recv(ws))["type"] == "snapshot":
                                break
                        except websockets.ConnectionClosed:
                            pass
                    await asyncio.sleep(0.5)  # the next try, not a synchronization
        finally:
            await to_thread(self.a.start)

"""PostgreSQL restarted under a running turn: a short outage is ridden out, a long one ends the turn `failed`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from django.conf import settings
from django.test import SimpleTestCase, tag

from tests.base import PASSWORD, to_thread
from tests.live import DaphneServer
from tests.services import start_postgres
from tests.sockets import assert_contiguous, rebuild
from tests.test_e2e import Client, completed, first_delta, recv, recv_until


def manage(database_url: str, *args: str) -> None:
    env = {**os.environ, "DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": "chatproject.settings"}
    env["FAST_PASSWORD_HASHING"] = "1"
    subprocess.run(
        [sys.executable, "manage.py", *args], cwd=settings.BASE_DIR, env=env, check=True, capture_output=True
    )


@tag("cluster")
class PostgresRestartTests(SimpleTestCase):
    server_env = {"LOCAL_MODEL_DELAY_MS": "20", "DB_OUTAGE_SECONDS": "4", "TURN_HEARTBEAT_SECONDS": "0.5"}

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.database_url, cls.stop_postgres = start_postgres()
        try:
            manage(cls.database_url, "migrate", "--no-input")
            manage(cls.database_url, "ensure_demo_user", "--username", "alice", "--password", PASSWORD)
            env = {**cls.server_env, "DATABASE_URL": cls.database_url}
            cls.server = DaphneServer(env, name=cls.__name__).start()
        except BaseException:
            cls.stop_postgres()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()
        cls.stop_postgres()
        super().tearDownClass()

    async def turn_through_an_outage(self, words: int, down_seconds: float, turn_id: str) -> tuple[list[dict], dict]:
        """Run `/lorem words`; PostgreSQL goes down for `down_seconds` at its first delta. Frames, final message."""
        alice = await Client(self.server, "alice").login()
        thread_id = await alice.new_thread()
        async with alice.socket(thread_id) as ws:
            await recv(ws)
            await ws.send(json.dumps({"type": "user_message", "content": f"/lorem {words}", "turn_id": turn_id}))
            frames = await recv_until(ws, first_delta)
            await to_thread(self.stop_postgres.restart, down_seconds)
            frames = await recv_until(ws, completed(turn_id), frames)
        return frames, await alice.content(thread_id, frames[-1]["message_id"])

    async def test_a_short_outage_lets_the_turn_complete(self) -> None:
        """PostgreSQL down for 2 s mid-turn (under DB_OUTAGE_SECONDS): the turn completes, every word once."""
        frames, final = await self.turn_through_an_outage(200, 2, "short")
        self.assertEqual(frames[-1]["data"]["status"], "completed")
        self.assertEqual((final["status"], len(final["content"].split())), ("completed", 200))
        message_id = frames[-1]["message_id"]
        assert_contiguous(frames, message_id)
        self.assertEqual(rebuild("", frames, message_id), final["content"])

    async def test_a_long_outage_ends_the_turn_failed_with_its_text(self) -> None:
        """PostgreSQL down for 7 s mid-turn (over DB_OUTAGE_SECONDS): the turn ends failed, its committed text kept."""
        frames, final = await self.turn_through_an_outage(1000, 7, "long")
        self.assertEqual(frames[-1]["data"]["status"], "failed")
        self.assertEqual(frames[-1]["data"]["error"]["code"], "storage_unavailable")
        self.assertEqual(final["status"], "failed")
        message_id = frames[-1]["message_id"]
        self.assertEqual(rebuild("", frames, message_id), final["content"])
        self.assertTrue(0 < len(final["content"].split()) < 1000)

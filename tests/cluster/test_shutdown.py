"""SIGTERM to a real daphne process: its turns finish or end `interrupted`, announced, then sockets close with 4012."""

from __future__ import annotations

import signal

import websockets
from django.test import tag

from chat.models import Message
from tests.base import ChatTransactionTestCase, to_thread
from tests.live import DaphneServer
from tests.test_e2e import Client, completed, first_delta, recv, recv_until, stored_status

EXIT_TIMEOUT = 20


@tag("cluster")
class GracefulStopTests(ChatTransactionTestCase):
    async def serve(self, drain_seconds: float) -> tuple[DaphneServer, Client, int]:
        await to_thread(self.make_user, "alice")
        env = {"LOCAL_MODEL_DELAY_MS": "30", "TURN_DRAIN_SECONDS": str(drain_seconds)}
        server = await to_thread(DaphneServer(env, name="sigterm").start)
        self.addCleanup(server.kill)
        alice = await Client(server, "alice").login()
        return server, alice, await alice.new_thread()

    async def terminate_mid_turn(self, server: DaphneServer, alice: Client, thread_id: int, words: int) -> list[dict]:
        """Start `/lorem words`, SIGTERM the server at its first delta; return every frame up to the close."""
        async with alice.socket(thread_id) as ws:
            await recv(ws)
            await ws.send(json_message(f"/lorem {words}", "stop-1"))
            frames = await recv_until(ws, first_delta)
            server.process.send_signal(signal.SIGTERM)
            frames = await recv_until(ws, completed("stop-1"), frames)
            with self.assertRaises(websockets.ConnectionClosed) as closed:
                await recv(ws)
        self.assertEqual(closed.exception.rcvd.code, 4012)
        self.assertEqual(await to_thread(server.process.wait, EXIT_TIMEOUT), 0)
        return frames

    async def test_a_turn_longer_than_the_drain_ends_interrupted_and_announced(self) -> None:
        """SIGTERM during a 30 s turn with a 1 s drain: agent_completed `interrupted`, a 4012 close, the row final."""
        server, alice, thread_id = await self.serve(drain_seconds=1)
        frames = await self.terminate_mid_turn(server, alice, thread_id, 1000)
        self.assertEqual(frames[-1]["data"]["status"], "interrupted")
        message_id = frames[-1]["message_id"]
        self.assertEqual(await to_thread(stored_status, message_id), "interrupted")
        content = await to_thread(lambda: Message.objects.get(pk=message_id).content)
        self.assertTrue(0 < len(content.split()) < 1000)

    async def test_a_turn_shorter_than_the_drain_completes(self) -> None:
        """SIGTERM during a 1.5 s turn with a 5 s drain: the turn completes in full before the 4012 close."""
        server, alice, thread_id = await self.serve(drain_seconds=5)
        frames = await self.terminate_mid_turn(server, alice, thread_id, 50)
        self.assertEqual(frames[-1]["data"]["status"], "completed")
        self.assertEqual(await to_thread(stored_status, frames[-1]["message_id"]), "completed")


def json_message(content: str, turn_id: str) -> str:
    import json

    return json.dumps({"type": "user_message", "content": content, "turn_id": turn_id})

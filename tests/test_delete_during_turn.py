"""Deleting a thread while its turn streams: the turn is cancelled first and the thread's sockets are told."""

from __future__ import annotations

import websockets

from tests.test_e2e import LiveServerTestCase, completed, first_delta, recv, recv_until


class DeleteDuringTurnTests(LiveServerTestCase):
    async def test_delete_cancels_the_turn_then_closes_the_thread_sockets(self) -> None:
        """DELETE mid-turn: the socket hears agent_completed `cancelled`, then thread_deleted, then a 4404 close."""
        alice = await self.login_as()
        thread_id = await alice.new_thread()
        async with alice.socket(thread_id) as ws:
            await recv(ws)
            await self.send_message(ws, "/lorem 1500", "del-1")
            frames = await recv_until(ws, first_delta)
            status, _ = await alice.api("DELETE", f"/api/threads/{thread_id}/")
            self.assertEqual(status, 204)
            frames = await recv_until(ws, completed("del-1"), frames)
            self.assertEqual(frames[-1]["data"]["status"], "cancelled")
            self.assertEqual(await recv(ws), {"type": "thread_deleted", "thread_id": thread_id})
            with self.assertRaises(websockets.ConnectionClosed) as closed:
                await recv(ws)
        self.assertEqual(closed.exception.rcvd.code, 4404)
        status, _ = await alice.api("GET", f"/api/threads/{thread_id}/")
        self.assertEqual(status, 404)

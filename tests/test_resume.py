"""SocketFeed: which frames one socket gets for each event of its thread after its snapshot (no socket needed)."""

from __future__ import annotations

from django.test import SimpleTestCase

from agents.resume import SocketFeed


def snapshot(*messages: dict) -> dict:
    return {"type": "snapshot", "thread_id": 1, "messages": list(messages), "active_turn": None}


def message(message_id: int, content: str = "", status: str = "streaming", actions: list | None = None) -> dict:
    return {"id": message_id, "content": content, "status": status, "actions": actions or []}


def event(kind: str, message_id: int = 9, **data) -> dict:
    return {"type": kind, "thread_id": 1, "turn_id": "t-1", "message_id": message_id, "data": data}


class StoredText:
    """Stands in for the database: the committed text of message 9, read from any start."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.reads: list[tuple[int, int]] = []

    async def __call__(self, message_id: int, start: int) -> tuple[str, str]:
        self.reads.append((message_id, start))
        return self.text[start:], "streaming"


class SocketFeedTests(SimpleTestCase):
    async def test_deltas_of_a_new_turn_pass_through_in_order(self):
        """agent_started, then contiguous deltas: each reaches the socket unchanged."""
        feed = SocketFeed(snapshot())
        out = await feed.frames(event("agent_started", agent="local", model="local"))
        out += await feed.frames(event("message_delta", offset=0, delta="Hello "))
        out += await feed.frames(event("message_delta", offset=6, delta="world"))
        self.assertEqual([f["type"] for f in out], ["agent_started", "message_delta", "message_delta"])
        self.assertEqual([f["data"]["offset"] for f in out[1:]], [0, 6])

    async def test_a_delta_overlapping_the_snapshot_is_trimmed_to_what_the_client_lacks(self):
        """Snapshot holds "Hello "; a delta at 0 of "Hello world" sends only "world" at offset 6."""
        feed = SocketFeed(snapshot(message(9, "Hello ")))
        out = await feed.frames(event("message_delta", offset=0, delta="Hello world", emitted_at=5))
        self.assertEqual([(f["data"]["offset"], f["data"]["delta"]) for f in out], [(6, "world")])
        self.assertEqual(out[0]["data"]["emitted_at"], 5)

    async def test_a_delta_the_client_already_has_is_dropped(self):
        """A delta ending inside what the snapshot showed sends nothing."""
        feed = SocketFeed(snapshot(message(9, "Hello world")))
        self.assertEqual(await feed.frames(event("message_delta", offset=0, delta="Hello")), [])

    async def test_a_gap_is_filled_from_the_database_before_going_on(self):
        """A delta past what was sent (a lost event) becomes one delta of the stored text from the sent length."""
        stored = StoredText("one two three four")
        feed = SocketFeed(snapshot(message(9, "one ")), read_tail=stored)
        out = await feed.frames(event("message_delta", offset=8, delta="three "))
        self.assertEqual([(f["data"]["offset"], f["data"]["delta"]) for f in out], [(4, "two three four")])
        self.assertEqual(stored.reads, [(9, 4)])
        self.assertIsInstance(out[0]["data"]["emitted_at"], int)
        # What the gap filling sent is not sent again.
        self.assertEqual(await feed.frames(event("message_delta", offset=14, delta="four")), [])

    async def test_a_filled_gap_is_dated_by_the_last_piece_sent(self):
        """A gap-filling delta carries the emitted_at of the last piece this socket got: its text came no earlier."""
        feed = SocketFeed(snapshot(), read_tail=StoredText("one two three"))
        await feed.frames(event("message_delta", offset=0, delta="one ", emitted_at=1000))
        out = await feed.frames(event("message_delta", offset=8, delta="three", emitted_at=3000))
        self.assertEqual([(f["data"]["delta"], f["data"]["emitted_at"]) for f in out], [("two three", 1000)])

    async def test_agent_completed_brings_the_missing_text_first(self):
        """agent_completed with a longer content_length than sent: the rest of the text, then the event."""
        stored = StoredText("all of it")
        feed = SocketFeed(snapshot(), read_tail=stored)
        out = await feed.frames(event("agent_completed", status="completed", content_length=9))
        self.assertEqual([f["type"] for f in out], ["message_delta", "agent_completed"])
        self.assertEqual((out[0]["data"]["offset"], out[0]["data"]["delta"]), (0, "all of it"))

    async def test_events_the_snapshot_already_shows_are_dropped(self):
        """user_message and agent_started of messages in the snapshot, and tool events it shows, are not repeated."""
        action = {"id": 3, "status": "success"}
        feed = SocketFeed(snapshot(message(8, "hi", "completed"), message(9, "", actions=[action])))
        user = {"type": "user_message", "thread_id": 1, "turn_id": "t-1", "data": {"message": {"id": 8}}}
        self.assertEqual(await feed.frames(user), [])
        self.assertEqual(await feed.frames(event("agent_started")), [])
        self.assertEqual(await feed.frames(event("tool_executing", action_id=3)), [])
        self.assertEqual(await feed.frames(event("tool_completed", action_id=3, status="success")), [])
        self.assertEqual(len(await feed.frames(event("tool_executing", action_id=4))), 1)

    async def test_deltas_of_a_message_final_in_the_snapshot_are_dropped(self):
        """A late delta of a message the snapshot showed as completed sends nothing."""
        feed = SocketFeed(snapshot(message(9, "done", "completed")))
        self.assertEqual(await feed.frames(event("message_delta", offset=4, delta="late")), [])

    async def test_reset_starts_again_from_a_new_snapshot(self):
        """After reset() with a longer snapshot, a delta is trimmed against that snapshot."""
        feed = SocketFeed(snapshot(message(9, "ab")))
        feed.reset(snapshot(message(9, "abcd")))
        out = await feed.frames(event("message_delta", offset=2, delta="cdef"))
        self.assertEqual([(f["data"]["offset"], f["data"]["delta"]) for f in out], [(4, "ef")])

    async def test_offsets_count_code_points(self):
        """An emoji counts as one code point, as Python's len and the contract say."""
        feed = SocketFeed(snapshot(message(9, "😀")))
        out = await feed.frames(event("message_delta", offset=0, delta="😀x"))
        self.assertEqual([(f["data"]["offset"], f["data"]["delta"]) for f in out], [(1, "x")])

"""Versions (PROTOCOL.md "Versions, search, export and agents"): edit, regenerate, switch, on a real socket."""

from __future__ import annotations

import json

from asgiref.sync import sync_to_async
from django.test import Client, override_settings

from chat import turns
from chat.models import Message, TokenUsage
from tests.base import PASSWORD
from tests.sockets import FRAME_TIMEOUT, assert_contiguous, rebuild, receive_until, receive_until_turn_ends
from tests.test_socket import SocketTestCase, finish_turn


def words(text: str) -> int:
    return len(text.split())


class VersionTestCase(SocketTestCase):
    async def start(self, communicator, content: str, turn_id: str) -> int:
        """Send a message and return the assistant message id once its first delta arrived."""
        await self.send(communicator, {"type": "user_message", "content": content, "turn_id": turn_id})
        frames = await receive_until(communicator, "message_delta")
        return frames[-1]["message_id"]

    async def regenerate(self, communicator, message_id: int, turn_id: str) -> list[dict]:
        await self.send(communicator, {"type": "regenerate", "message_id": message_id, "turn_id": turn_id})
        frames = await receive_until_turn_ends(communicator, turn_id)
        await finish_turn(self.thread.pk, turn_id)
        return frames

    async def detail(self) -> dict:
        """GET /api/threads/<id>/ as the owner."""

        def get() -> dict:
            client = Client()
            client.force_login(self.user)
            return client.get(f"/api/threads/{self.thread.pk}/").json()

        return await sync_to_async(get)()

    async def patch(self, body: dict, user=None):
        def send():
            client = Client()
            client.force_login(user or self.user)
            return client.patch(f"/api/threads/{self.thread.pk}/", json.dumps(body), content_type="application/json")

        return await sync_to_async(send)()

    async def two_turns(self, communicator) -> list[dict]:
        """u1 a1 u2 a2, returned as the thread's active path."""
        await self.turn(communicator, "first question", "t1")
        await self.turn(communicator, "second question", "t2")
        return (await self.detail())["messages"]

    async def assert_refused(self, communicator, code: str) -> None:
        frame = await communicator.receive_json_from(timeout=FRAME_TIMEOUT)
        self.assertEqual((frame["type"], frame["code"]), ("error", code))

    async def message_count(self) -> int:
        return await Message.objects.filter(thread=self.thread).acount()


class TreeTests(VersionTestCase):
    async def test_linear_turns_link_each_message_to_the_one_before(self):
        """Without edits each message follows the previous one and is its own only version."""
        communicator, _ = await self.connect()
        u1, a1, u2, a2 = await self.two_turns(communicator)
        self.assertEqual([m["parent_id"] for m in (u1, a1, u2, a2)], [None, u1["id"], a1["id"], u2["id"]])
        self.assertEqual([m["versions"] for m in (u1, a1, u2, a2)], [[m["id"]] for m in (u1, a1, u2, a2)])


class EditTests(VersionTestCase):
    async def test_edit_makes_a_version_and_the_active_path_goes_through_it(self):
        """A user_message with parent_id beside an earlier question: versions [old, new], path through the new one."""
        communicator, _ = await self.connect()
        u1, a1, u2, a2 = await self.two_turns(communicator)
        frames = await self.turn(communicator, "second question, edited", "t2-edit", parent_id=a1["id"])
        edited = frames[0]["data"]["message"]
        self.assertEqual(frames[0]["type"], "user_message")
        self.assertEqual((edited["parent_id"], edited["versions"]), (a1["id"], [u2["id"], edited["id"]]))
        path = (await self.detail())["messages"]
        answer = frames[-1]["message_id"]
        self.assertEqual([m["id"] for m in path], [u1["id"], a1["id"], edited["id"], answer])
        _, snapshot = await self.connect()
        self.assertEqual([m["id"] for m in snapshot["messages"]], [m["id"] for m in path])
        # The older branch keeps its text.
        self.assertEqual((await Message.objects.aget(pk=a2["id"])).content, a2["content"])

    async def test_the_model_sees_only_the_active_path(self):
        """An edited question's answer is prompted with u1, a1 and the edit: nothing of the replaced branch."""
        communicator, _ = await self.connect()
        u1, a1, _, _ = await self.two_turns(communicator)
        frames = await self.turn(communicator, "edited", "t2-edit", parent_id=a1["id"])
        usage = frames[-1]["data"]["usage"]
        self.assertEqual(usage["prompt_tokens"], words(u1["content"]) + words(a1["content"]) + 1)

    async def test_null_parent_starts_a_new_first_message(self):
        """parent_id null makes a version of the first message; a missing parent_id follows the active leaf."""
        communicator, _ = await self.connect()
        u1, _, _, a2 = await self.two_turns(communicator)
        frames = await self.turn(communicator, "start over", "t-root", parent_id=None)
        root = frames[0]["data"]["message"]
        self.assertEqual((root["parent_id"], root["versions"]), (None, [u1["id"], root["id"]]))
        self.assertEqual(frames[-1]["data"]["usage"]["prompt_tokens"], 2)
        path = (await self.detail())["messages"]
        self.assertEqual([m["id"] for m in path], [root["id"], frames[-1]["message_id"]])
        frames = await self.turn(communicator, "go on", "t-next")
        self.assertEqual(frames[0]["data"]["message"]["parent_id"], path[-1]["id"])
        self.assertNotEqual(frames[0]["data"]["message"]["parent_id"], a2["id"])

    async def test_parent_that_is_not_a_finished_answer_of_the_thread_is_not_found(self):
        """A user message, another thread's answer, an unknown id or a streaming answer as parent_id: not_found."""
        communicator, _ = await self.connect()
        u1, _, _, _ = await self.two_turns(communicator)
        other = await sync_to_async(self.make_thread)(self.user, "other")
        other_socket, _ = await self.connect(thread_id=other.pk)
        await self.send(other_socket, {"type": "user_message", "content": "hi", "turn_id": "o1"})
        other_answer = (await receive_until_turn_ends(other_socket, "o1"))[-1]["message_id"]
        await finish_turn(other.pk, "o1")
        before = await self.message_count()
        for parent in (u1["id"], other_answer, 999_999):
            await self.send(
                communicator, {"type": "user_message", "content": "x", "turn_id": f"bad-{parent}", "parent_id": parent}
            )
            await self.assert_refused(communicator, "not_found")
        with override_settings(LOCAL_MODEL_DELAY_MS=20):
            streaming = await self.start(communicator, "/lorem 200", "long")
            await self.send(
                communicator, {"type": "user_message", "content": "x", "turn_id": "bad-s", "parent_id": streaming}
            )
            frames = await receive_until(communicator, "error")
            self.assertEqual(frames[-1]["code"], "not_found")
            await self.send(communicator, {"type": "cancel", "turn_id": "long"})
            await receive_until_turn_ends(communicator, "long")
            await finish_turn(self.thread.pk, "long")
        self.assertEqual(await self.message_count(), before + 2)  # only the /lorem turn
        await self.send(communicator, {"type": "user_message", "content": "x", "parent_id": True})
        await self.assert_refused(communicator, "invalid_message")

    async def test_repeated_edit_turn_id_is_answered_with_the_stored_message(self):
        """Sending the same edit twice stores it once; the repeat gets the stored user_message."""
        communicator, _ = await self.connect()
        _, a1, _, _ = await self.two_turns(communicator)
        frames = await self.turn(communicator, "edited", "t-edit", parent_id=a1["id"])
        count = await self.message_count()
        await self.send(
            communicator, {"type": "user_message", "content": "edited", "turn_id": "t-edit", "parent_id": a1["id"]}
        )
        reply = await communicator.receive_json_from(timeout=FRAME_TIMEOUT)
        self.assertEqual(
            (reply["type"], reply["data"]["message"]["id"]), ("user_message", frames[0]["data"]["message"]["id"])
        )
        self.assertEqual(await self.message_count(), count)


class RegenerateTests(VersionTestCase):
    async def test_regenerate_streams_a_new_version_beside_the_answer(self):
        """regenerate: a full turn without user_message; the old answer stays; the new one is the active leaf."""
        communicator, _ = await self.connect()
        u1, a1, u2, a2 = await self.two_turns(communicator)
        frames = await self.regenerate(communicator, a2["id"], "r1")
        kinds = [f["type"] for f in frames]
        self.assertEqual((kinds[0], kinds[-1]), ("agent_started", "agent_completed"))
        self.assertNotIn("user_message", kinds)
        self.assertEqual(frames[0]["data"], {"agent": "local", "model": "local"})
        new = frames[-1]["message_id"]
        assert_contiguous(frames, new)
        path = (await self.detail())["messages"]
        self.assertEqual([m["id"] for m in path], [u1["id"], a1["id"], u2["id"], new])
        self.assertEqual((path[-1]["parent_id"], path[-1]["versions"]), (u2["id"], [a2["id"], new]))
        self.assertEqual(rebuild("", frames, new), path[-1]["content"])
        old = await Message.objects.aget(pk=a2["id"])
        self.assertEqual((old.content, old.status), (a2["content"], "completed"))
        # Prompted with its own ancestors only.
        expected = sum(words(m["content"]) for m in (u1, a1, u2))
        self.assertEqual(frames[-1]["data"]["usage"]["prompt_tokens"], expected)

    async def test_repeated_regenerate_turn_id_starts_and_stores_nothing(self):
        """The same regenerate turn_id again: no frame, no row."""
        communicator, _ = await self.connect()
        await self.turn(communicator, "question", "t1")
        answer = (await self.detail())["messages"][-1]["id"]
        await self.regenerate(communicator, answer, "r1")
        count = await self.message_count()
        await self.send(communicator, {"type": "regenerate", "message_id": answer, "turn_id": "r1"})
        await self.send(communicator, {"type": "regenerate", "message_id": answer, "turn_id": "t1"})
        await self.assert_still_open(communicator)
        self.assertEqual(await self.message_count(), count)

    async def test_regenerate_of_something_else_is_not_found(self):
        """A user message, an unknown id or another thread's answer to regenerate: not_found, nothing stored."""
        communicator, _ = await self.connect()
        await self.turn(communicator, "question", "t1")
        question = (await self.detail())["messages"][0]["id"]
        other = await sync_to_async(self.make_thread)(self.user, "other")
        other_socket, _ = await self.connect(thread_id=other.pk)
        await self.send(other_socket, {"type": "user_message", "content": "hi", "turn_id": "o1"})
        other_answer = (await receive_until_turn_ends(other_socket, "o1"))[-1]["message_id"]
        await finish_turn(other.pk, "o1")
        count = await self.message_count()
        for message_id in (question, 999_999, other_answer):
            await self.send(communicator, {"type": "regenerate", "message_id": message_id, "turn_id": "r-bad"})
            await self.assert_refused(communicator, "not_found")
        self.assertEqual(await self.message_count(), count)

    @override_settings(LOCAL_MODEL_DELAY_MS=20)
    async def test_regenerate_cancels_the_running_turn_first(self):
        """A regenerate during a turn ends that turn cancelled before the new answer starts."""
        communicator, _ = await self.connect()
        with override_settings(LOCAL_MODEL_DELAY_MS=0):
            await self.turn(communicator, "question", "t1")
        answer = (await self.detail())["messages"][-1]["id"]
        running = await self.start(communicator, "/lorem 300", "long")
        await self.send(communicator, {"type": "regenerate", "message_id": answer, "turn_id": "r1"})
        frames = await receive_until_turn_ends(communicator, "r1")
        await finish_turn(self.thread.pk, "r1")
        kinds = [(f["type"], f.get("turn_id")) for f in frames]
        self.assertLess(kinds.index(("agent_completed", "long")), kinds.index(("agent_started", "r1")))
        self.assertEqual((await Message.objects.aget(pk=running)).status, "cancelled")

    @override_settings(CHAT_MESSAGES_PER_MINUTE=3)
    async def test_edits_and_regenerates_count_against_the_message_limit(self):
        """A message, a regenerate and an edit use a limit of 3; the next regenerate or edit is rate_limited."""
        communicator, _ = await self.connect()
        await self.turn(communicator, "question", "t1")
        answer = (await self.detail())["messages"][-1]
        await self.regenerate(communicator, answer["id"], "r1")
        await self.turn(communicator, "edited", "e1", parent_id=None)
        count = await self.message_count()
        await self.send(communicator, {"type": "regenerate", "message_id": answer["id"], "turn_id": "r2"})
        frame = await communicator.receive_json_from(timeout=FRAME_TIMEOUT)
        self.assertEqual((frame["type"], frame["code"], frame["turn_id"]), ("error", "rate_limited", "r2"))
        await self.send(communicator, {"type": "user_message", "content": "x", "turn_id": "e2", "parent_id": None})
        await self.assert_refused(communicator, "rate_limited")
        self.assertEqual(await self.message_count(), count)

    async def test_every_branch_keeps_seq_gap_free_and_usage_once(self):
        """After edits and regenerates, seq runs 1..n over all branches and each answer has one usage row."""
        communicator, _ = await self.connect()
        u1, a1, u2, a2 = await self.two_turns(communicator)
        await self.regenerate(communicator, a2["id"], "r1")
        await self.turn(communicator, "edit", "e1", parent_id=a1["id"])
        await self.regenerate(communicator, a1["id"], "r2")
        seqs = [m.seq async for m in Message.objects.filter(thread=self.thread).order_by("seq")]
        self.assertEqual(seqs, list(range(1, len(seqs) + 1)))
        answers = await Message.objects.filter(thread=self.thread, role="assistant").acount()
        self.assertEqual(await TokenUsage.objects.filter(thread=self.thread).acount(), answers)
        self.assertEqual(answers, 5)

    @override_settings(LOCAL_MODEL_DELAY_MS=10)
    async def test_reconnect_during_a_regenerate_resumes_exactly_once(self):
        """A socket opened while a regenerated answer streams rebuilds its final text exactly."""
        communicator, _ = await self.connect()
        with override_settings(LOCAL_MODEL_DELAY_MS=0):
            await self.turn(communicator, "/lorem 3", "t1")
        answer = (await self.detail())["messages"][-1]["id"]
        await self.send(communicator, {"type": "regenerate", "message_id": answer, "turn_id": "r1"})
        await receive_until(communicator, "message_delta")
        second, snapshot = await self.connect()
        streaming = snapshot["messages"][-1]
        self.assertEqual((streaming["status"], streaming["parent_id"]), ("streaming", snapshot["messages"][0]["id"]))
        frames = await receive_until_turn_ends(second, "r1")
        await finish_turn(self.thread.pk, "r1")
        final = (await Message.objects.aget(pk=streaming["id"])).content
        self.assertEqual(rebuild(streaming["content"], frames, streaming["id"]), final)


class SwitchTests(VersionTestCase):
    async def versions_of_last_answer(self, communicator) -> tuple[dict, int]:
        """A turn and a regenerate of its answer: (the first answer, the regenerated one's id)."""
        await self.turn(communicator, "question", "t1")
        first = (await self.detail())["messages"][-1]
        frames = await self.regenerate(communicator, first["id"], "r1")
        return first, frames[-1]["message_id"]

    async def test_switch_version_sends_every_socket_a_snapshot_of_the_new_path(self):
        """switch_version to the first answer: both sockets get a snapshot ending there; HTTP shows it too."""
        communicator, _ = await self.connect()
        first, second_answer = await self.versions_of_last_answer(communicator)
        other, _ = await self.connect()
        await self.send(communicator, {"type": "switch_version", "message_id": first["id"]})
        for socket in (communicator, other):
            snapshot = await socket.receive_json_from(timeout=FRAME_TIMEOUT)
            self.assertEqual(snapshot["type"], "snapshot")
            self.assertEqual(snapshot["messages"][-1]["id"], first["id"])
            self.assertEqual(snapshot["messages"][-1]["versions"], [first["id"], second_answer])
        self.assertEqual((await self.detail())["messages"][-1]["id"], first["id"])
        # Switching to the question follows its newest answer.
        await self.send(communicator, {"type": "switch_version", "message_id": first["parent_id"]})
        snapshot = await communicator.receive_json_from(timeout=FRAME_TIMEOUT)
        self.assertEqual(snapshot["messages"][-1]["id"], second_answer)
        # A new message follows the active leaf.
        frames = await self.turn(communicator, "next", "t2")
        self.assertEqual(frames[0]["data"]["message"]["parent_id"], second_answer)

    async def test_switch_to_a_message_not_in_the_thread_is_not_found(self):
        """switch_version to an unknown id: not_found and the path stays."""
        communicator, _ = await self.connect()
        _, second_answer = await self.versions_of_last_answer(communicator)
        await self.send(communicator, {"type": "switch_version", "message_id": 999_999})
        await self.assert_refused(communicator, "not_found")
        self.assertEqual((await self.detail())["messages"][-1]["id"], second_answer)

    @override_settings(LOCAL_MODEL_DELAY_MS=10)
    async def test_switch_during_a_stream_resets_the_resume_point(self):
        """A switch while an answer streams: after the fresh snapshot the text rebuilds exactly from it."""
        communicator, _ = await self.connect()
        with override_settings(LOCAL_MODEL_DELAY_MS=0):
            await self.turn(communicator, "/lorem 3", "t1")
        question = (await self.detail())["messages"][0]["id"]
        message_id = await self.start(communicator, "/lorem 80", "t2")
        await self.send(communicator, {"type": "switch_version", "message_id": question})
        frames = await receive_until(communicator, "snapshot")
        snapshot = frames[-1]
        streaming = next(m for m in snapshot["messages"] if m["id"] == message_id)
        self.assertEqual(streaming["status"], "streaming")
        after = await receive_until_turn_ends(communicator, "t2")
        await finish_turn(self.thread.pk, "t2")
        deltas = [f for f in after if f["type"] == "message_delta"]
        self.assertLessEqual(deltas[0]["data"]["offset"], len(streaming["content"]))
        final = (await Message.objects.aget(pk=message_id)).content
        self.assertEqual(rebuild(streaming["content"], after, message_id), final)
        self.assertEqual(words(final), 80)

    async def test_patch_active_message_id_switches_and_sends_the_snapshot(self):
        """PATCH {"active_message_id"}: 200 with the thread, sockets get a snapshot, the title stays."""
        communicator, _ = await self.connect()
        first, _ = await self.versions_of_last_answer(communicator)
        response = await self.patch({"active_message_id": first["id"]})
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json()["title"], self.thread.title)
        snapshot = await communicator.receive_json_from(timeout=FRAME_TIMEOUT)
        self.assertEqual((snapshot["type"], snapshot["messages"][-1]["id"]), ("snapshot", first["id"]))
        self.assertEqual((await self.detail())["messages"][-1]["id"], first["id"])

    async def test_patch_with_a_foreign_or_unknown_message_is_404(self):
        """PATCH active_message_id of another thread's message, a string or an unknown id: 404 not_found."""
        communicator, _ = await self.connect()
        _, second_answer = await self.versions_of_last_answer(communicator)
        other = await sync_to_async(self.make_thread)(self.user, "other")
        foreign = (await sync_to_async(turns.persist_user_turn)(other.pk, "x", "x")).id
        for value in (foreign, "1", 999_999):
            response = await self.patch({"active_message_id": value})
            self.assertEqual(response.status_code, 404)
            self.assertEqual(response.json()["error"]["code"], "not_found")
        self.assertEqual((await self.detail())["messages"][-1]["id"], second_answer)
        bob = await sync_to_async(self.make_user)("bob", PASSWORD)
        self.assertEqual((await self.patch({"active_message_id": second_answer}, user=bob)).status_code, 404)

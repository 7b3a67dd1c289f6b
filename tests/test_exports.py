"""Export and import (PROTOCOL.md "Export and import") of a thread built through a real socket."""

from __future__ import annotations

import json

from asgiref.sync import sync_to_async
from django.test import Client

from agents.catalog import default_agent
from chat.models import Message, Thread
from tests.test_versions import VersionTestCase


def comparable(messages: list[dict]) -> list[tuple]:
    """What an import must keep of each message: tree (by position), text, status, tool calls, usage, time."""
    position = {m["id"]: index for index, m in enumerate(messages)}
    return [
        (
            None if m["parent_id"] is None else position[m["parent_id"]],
            m["role"],
            m["content"],
            m["status"],
            [(a["tool"], a["input"], a["output"], a["status"], a["started_at"]) for a in m["actions"]],
            m["usage"],
            m["created_at"],
        )
        for m in messages
    ]


class ExportTests(VersionTestCase):
    def http_as(self, user=None) -> Client:
        client = Client()
        client.force_login(user or self.user)
        return client

    async def branched_thread(self) -> dict:
        """q1 (a calculation) a1, q2 a2, an edit of q2 with its answer, then a regenerate of that answer."""
        communicator, _ = await self.connect()
        await self.turn(communicator, "what is 2+3", "t1")
        await self.turn(communicator, "old second question", "t2")
        a1 = (await self.detail())["messages"][1]
        frames = await self.turn(communicator, "new second question", "t3", parent_id=a1["id"])
        await self.regenerate(communicator, frames[-1]["message_id"], "r1")
        await communicator.disconnect()
        return await self.detail()

    async def export(self, kind: str = "json", user=None):
        path = f"/api/threads/{self.thread.pk}/export/"
        return await sync_to_async(lambda: self.http_as(user).get(path, {"format": kind}))()

    async def import_body(self, body: bytes | str):
        return await sync_to_async(
            lambda: self.http_as().post("/api/threads/import/", body, content_type="application/json")
        )()

    async def test_json_export_holds_every_branch_in_seq_order(self):
        """format=json: an attachment with all seven messages, in seq order, with parents, actions and usage."""
        await self.branched_thread()
        response = await self.export()
        self.assertEqual(response.status_code, 200)
        self.assertIn("attachment", response["Content-Disposition"])
        body = json.loads(response.content)
        self.assertEqual((body["format"], body["version"], body["thread"]["title"]), ("chat-export", 1, "A thread"))
        messages = body["messages"]
        self.assertEqual([m["seq"] for m in messages], list(range(1, 8)))
        self.assertEqual([m["role"] for m in messages].count("assistant"), 4)
        self.assertEqual(messages[1]["actions"][0]["tool"], "calculator")
        self.assertTrue(all(m["usage"] for m in messages if m["role"] == "assistant"))
        self.assertIn("old second question", [m["content"] for m in messages])

    async def test_markdown_export_is_the_active_path(self):
        """format=markdown: title, ## User / ## Assistant headings, the tool call; no text of other branches."""
        detail = await self.branched_thread()
        response = await self.export("markdown")
        self.assertEqual(response.status_code, 200)
        self.assertTrue(response["Content-Type"].startswith("text/markdown"))
        self.assertIn("attachment", response["Content-Disposition"])
        text = response.content.decode()
        self.assertTrue(text.startswith("# A thread\n"))
        self.assertEqual(text.count("## User"), 2)
        self.assertEqual(text.count("## Assistant"), 2)
        self.assertIn("**Tool `calculator`**", text)
        self.assertIn('"expression": "2+3"', text)
        self.assertIn(detail["messages"][-1]["content"], text)
        self.assertNotIn("old second question", text)

    async def test_import_copies_the_tree_and_ends_at_the_newest_leaf(self):
        """Importing an export: a new thread with new ids and the same tree, texts, tool calls, usage and times."""
        await self.branched_thread()
        original = json.loads((await self.export()).content)
        response = await self.import_body(json.dumps(original))
        self.assertEqual(response.status_code, 201)
        imported = response.json()
        self.assertNotEqual(imported["id"], self.thread.pk)
        self.assertEqual(
            (imported["title"], imported["agent"]), ("A thread", (await sync_to_async(default_agent)()).pk)
        )
        self.thread = await Thread.objects.aget(pk=imported["id"])
        copy = json.loads((await self.export()).content)
        self.assertEqual(comparable(copy["messages"]), comparable(original["messages"]))
        self.assertFalse({m["id"] for m in copy["messages"]} & {m["id"] for m in original["messages"]})
        self.assertEqual([m["seq"] for m in copy["messages"]], list(range(1, 8)))
        self.assertEqual((await self.detail())["messages"][-1]["id"], copy["messages"][-1]["id"])

    async def test_a_streaming_message_is_imported_interrupted(self):
        """An export caught mid-answer imports that answer `interrupted`, its text kept."""
        await self.branched_thread()
        original = json.loads((await self.export()).content)
        original["messages"][-1]["status"] = "streaming"
        thread_id = (await self.import_body(json.dumps(original))).json()["id"]
        last = await Message.objects.filter(thread_id=thread_id).order_by("-seq").afirst()
        self.assertEqual(
            (last.status, last.metadata["has_error"], last.metadata["streaming"]), ("interrupted", True, False)
        )
        self.assertEqual(last.content, original["messages"][-1]["content"])

    async def test_invalid_exports_are_refused_and_store_nothing(self):
        """Not JSON, not an export, a broken tree, NUL text, too many messages or too many bytes: invalid_export."""
        await self.branched_thread()
        good = json.loads((await self.export()).content)
        threads, messages = await Thread.objects.acount(), await Message.objects.acount()

        def changed(**patch) -> str:
            return json.dumps({**good, **patch})

        later_parent = [dict(good["messages"][0], parent_id=good["messages"][1]["id"]), *good["messages"][1:]]
        bad_bodies = [
            "{not json",
            "[]",
            changed(format="other"),
            changed(version=2),
            changed(messages=later_parent),
            changed(messages=[good["messages"][0], good["messages"][0]]),
            changed(messages=[dict(good["messages"][0], content="a\u0000b")]),
            changed(messages=[dict(good["messages"][0], role="system")]),
            changed(messages=[dict(good["messages"][0], id=i, parent_id=None) for i in range(2001)]),
            changed(thread={"title": "x" * 201}),
            json.dumps({**good, "padding": "x" * 3_000_000}),
        ]
        for body in bad_bodies:
            response = await self.import_body(body)
            self.assertEqual(response.status_code, 400, body[:80])
            self.assertEqual(response.json()["error"]["code"], "invalid_export")
        self.assertEqual((await Thread.objects.acount(), await Message.objects.acount()), (threads, messages))

    async def test_export_of_another_users_thread_is_404(self):
        """Bob cannot export Alice's thread, in either format."""
        await self.branched_thread()
        bob = await sync_to_async(self.make_user)("bob")
        for kind in ("json", "markdown"):
            self.assertEqual((await self.export(kind, user=bob)).status_code, 404)

    async def test_imported_messages_are_found_by_search(self):
        """The imported copy is searchable like any thread."""
        await self.branched_thread()
        original = json.loads((await self.export()).content)
        thread_id = (await self.import_body(json.dumps(original))).json()["id"]
        response = await sync_to_async(lambda: self.http_as().get("/api/search/", {"q": "old second"}))()
        results = response.json()["results"]
        self.assertEqual({r["thread_id"] for r in results}, {self.thread.pk, thread_id})

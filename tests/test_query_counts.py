"""Query counts pinned for the reads that list things: an N+1 (a query per message, turn or row) fails here.

The data: a thread of 500 messages (each answer with a tool call and usage)
and 50 running turns in other threads, each with pieces and a pending call.
Every count below is the same with 5 messages or 5,000.
"""

from __future__ import annotations

from django.contrib.contenttypes.models import ContentType
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from chat import reports, selectors
from chat.models import AgentAction, Message, MessageChunk, Thread, TokenUsage
from tests.base import ChatTestCase

BIG_THREAD = 500
RUNNING = 50


class QueryCountTests(ChatTestCase):
    @classmethod
    def setUpTestData(cls) -> None:
        cls.alice = cls.make_user(cls, "alice")
        cls.root = cls.make_user(cls, "root", is_staff=True, is_superuser=True)
        cls.big = Thread.objects.create(owner=cls.alice, title="Long thread", last_seq=BIG_THREAD)
        Message.objects.bulk_create(
            Message(
                thread=cls.big,
                seq=seq,
                turn_id=f"b-{(seq + 1) // 2}",
                role=Message.Role.USER if seq % 2 else Message.Role.ASSISTANT,
                content=f"message {seq} " * 20,
                content_length=len(f"message {seq} " * 20),
                metadata={"agent": "local", "model": "local"},
            )
            for seq in range(1, BIG_THREAD + 1)
        )
        chain = list(Message.objects.filter(thread=cls.big).order_by("seq"))
        for before, message in zip(chain, chain[1:], strict=False):
            message.parent = before  # one path: each message follows the one before it
        Message.objects.bulk_update(chain, ["parent"])
        Thread.objects.filter(pk=cls.big.pk).update(active_leaf=chain[-1])
        answers = list(Message.objects.filter(thread=cls.big, role=Message.Role.ASSISTANT))
        AgentAction.objects.bulk_create(
            AgentAction(message=m, call_id="c-1", tool="calculator", input={"expression": "1+1"}, status="success")
            for m in answers
        )
        TokenUsage.objects.bulk_create(
            TokenUsage(message=m, thread=cls.big, user=cls.alice, model="local", total_tokens=3) for m in answers
        )
        cls.answer = answers[-1]
        running = []
        for i in range(RUNNING):
            thread = Thread.objects.create(owner=cls.alice, title=f"Running {i}", last_seq=2)
            Message.objects.create(thread=thread, seq=1, turn_id=f"r-{i}", role="user", content="/lorem 100")
            running.append(
                Message(
                    thread=thread,
                    seq=2,
                    turn_id=f"r-{i}",
                    role=Message.Role.ASSISTANT,
                    status=Message.Status.STREAMING,
                    content_length=30,
                    heartbeat_at=timezone.now(),
                    metadata={"streaming": True, "agent": "local", "model": "local"},
                )
            )
        running = Message.objects.bulk_create(running)
        MessageChunk.objects.bulk_create(
            MessageChunk(message=m, start=start, text="lorem ipsu") for m in running for start in (0, 10, 20)
        )
        AgentAction.objects.bulk_create(AgentAction(message=m, call_id="c-1", tool="clock") for m in running)
        cls.streaming = running[0]

    def setUp(self) -> None:
        # Change pages look up their model's content type once per process: start each test cold.
        ContentType.objects.clear_cache()
        self.user_client = Client()
        self.user_client.force_login(self.alice)
        self.staff = Client()
        self.staff.force_login(self.root)

    def get(self, client: Client, url: str, queries: int) -> None:
        with self.assertNumQueries(queries):
            response = client.get(url)
        self.assertEqual(response.status_code, 200, url)

    def test_snapshot_of_a_long_thread(self):
        """A 500-message thread's snapshot: the tree, the leaf, the latest 50 with actions, pieces, usage: 9 queries."""
        with self.assertNumQueries(9):  # with the savepoint of its transaction
            snapshot = selectors.thread_snapshot(self.big.pk)
        self.assertEqual(len(snapshot["messages"]), 50)

    def test_thread_api_list_and_detail(self):
        """GET /api/threads/ and GET /api/threads/<id>/ of a 500-message thread: a fixed number of queries."""
        self.get(self.user_client, "/api/threads/", 4)  # session, user, the default agent once, threads
        with self.assertNumQueries(12):  # session, user, thread, the tree and leaf, 4 message reads, the default agent
            body = self.user_client.get(f"/api/threads/{self.big.pk}/").json()
        self.assertEqual(len(body["messages"]), BIG_THREAD)

    def test_live_turns_data_page_and_snapshot(self):
        """Live turns with 50 running turns: data, page and the socket's snapshot each in a fixed number of queries."""
        with self.assertNumQueries(4):  # running, finished, then the tool calls and usage of both
            live = reports.live_turns()
        self.assertEqual(sum(t["running"] for t in live), RUNNING)
        self.get(self.staff, reverse("admin:chat_message_live_data"), 6)
        self.get(self.staff, reverse("admin:chat_message_live"), 6)

    def test_admin_lists(self):
        """The thread, message, tool call and usage lists: a fixed number of queries whatever the rows."""
        self.get(self.staff, reverse("admin:chat_thread_changelist"), 4)
        self.get(self.staff, reverse("admin:chat_message_changelist"), 5)
        self.get(self.staff, reverse("admin:chat_message_changelist") + "?status=streaming", 5)
        self.get(self.staff, reverse("admin:chat_agentaction_changelist"), 4)
        self.get(self.staff, reverse("admin:chat_tokenusage_changelist"), 4)

    def test_admin_change_pages(self):
        """The change pages of a 500-message thread, an answer, a streaming answer, a tool call and a usage row."""
        self.get(self.staff, reverse("admin:chat_thread_change", args=[self.big.pk]), 7)
        self.get(self.staff, reverse("admin:chat_message_change", args=[self.answer.pk]), 7)
        self.get(self.staff, reverse("admin:chat_message_change", args=[self.streaming.pk]), 6)
        action = AgentAction.objects.filter(message=self.answer).get()
        self.get(self.staff, reverse("admin:chat_agentaction_change", args=[action.pk]), 7)
        usage = TokenUsage.objects.get(message=self.answer)
        self.get(self.staff, reverse("admin:chat_tokenusage_change", args=[usage.pk]), 6)

    def test_usage_report(self):
        """The Usage page sums in SQL: a fixed number of queries over any number of usage rows."""
        self.get(self.staff, reverse("admin:chat_tokenusage_report"), 6)

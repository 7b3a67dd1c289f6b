"""The admin for turn rows and its staff pages: read-only, escaped, full streaming text, live data, cancel, usage."""

from __future__ import annotations

from datetime import timedelta
from unittest import mock

from django.test import Client
from django.urls import reverse
from django.utils import timezone

from chat import reports, turns
from chat.models import Message, MessageChunk, TokenUsage
from tests.base import ChatTestCase
from web import admin as chat_admin

XSS = "<img src=x onerror=window.__xss=1><script>window.__xss=2</script>"


class AdminTestCase(ChatTestCase):
    def setUp(self) -> None:
        self.alice = self.make_user("alice")
        self.staff = self.make_user("root", is_staff=True, is_superuser=True)
        self.thread = self.make_thread(self.alice, title="Alice's thread")
        self.client = Client()
        self.client.force_login(self.staff)

    def streaming_turn(self, turn_id: str = "t-live", question: str = "/lorem 9", pieces=("lorem ", "ipsum ")) -> int:
        """A running turn written the way the runtime writes it: user message, shell, pieces, a pending tool call."""
        turns.persist_user_turn(self.thread.pk, turn_id, question)
        message_id = turns.persist_assistant_shell(self.thread.pk, turn_id, agent="local", model="local").id
        for piece in pieces:
            turns.append_content(message_id, piece)
        turns.start_action(message_id, "call-1", "calculator", {"expression": "1+1"})
        return message_id

    def finished_turn(self, turn_id: str, text: str, usage: dict | None = None, status: str = "completed") -> int:
        turns.persist_user_turn(self.thread.pk, turn_id, "question " + turn_id)
        message_id = turns.persist_assistant_shell(self.thread.pk, turn_id, agent="local", model="local").id
        turns.append_content(message_id, text)
        turns.finalize_assistant_turn(message_id, status, usage)
        return message_id


class TurnAdminTests(AdminTestCase):
    def test_every_turn_admin_lists_and_shows_rows(self):
        """Thread, Message, AgentAction and TokenUsage lists and pages answer 200 with data in them."""
        message_id = self.streaming_turn()
        done = self.finished_turn(
            "t-done", "four", {"model": "local", "prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
        )
        action = Message.objects.get(pk=message_id).actions.get()
        usage = TokenUsage.objects.get(message_id=done)
        pages = [
            "admin:chat_thread_changelist",
            "admin:chat_message_changelist",
            "admin:chat_agentaction_changelist",
            "admin:chat_tokenusage_changelist",
        ]
        for name in pages:
            self.assertEqual(self.client.get(reverse(name)).status_code, 200, name)
        for name, pk in [
            ("admin:chat_thread_change", self.thread.pk),
            ("admin:chat_message_change", message_id),
            ("admin:chat_message_change", done),
            ("admin:chat_agentaction_change", action.pk),
            ("admin:chat_tokenusage_change", usage.pk),
        ]:
            self.assertEqual(self.client.get(reverse(name, args=[pk])).status_code, 200, name)

    def test_thread_page_shows_the_latest_messages_and_links_to_all(self):
        """A thread of 60 messages shows its latest 50 inline, newest first, and links to the list of all 60."""
        for i in range(30):
            self.finished_turn(f"t-{i}", f"answer {i}")
        response = self.client.get(reverse("admin:chat_thread_change", args=[self.thread.pk]))
        inline = response.context["inline_admin_formsets"][0]
        self.assertEqual([form.original.seq for form in inline], list(range(60, 10, -1)))
        url = reverse("admin:chat_message_changelist") + f"?thread__id__exact={self.thread.pk}"
        self.assertContains(response, url.replace("&", "&amp;"))
        self.assertContains(response, "All 60 in the message list")
        self.assertEqual(self.client.get(url).context["cl"].result_count, 60)

    def test_a_long_list_counts_up_to_its_cap(self):
        """Past COUNT_CAP rows the message list stops counting and says "N+", without facet counts."""
        for i in range(3):
            self.finished_turn(f"t-{i}", "text")
        with (
            mock.patch.object(chat_admin, "COUNT_CAP", 4),
            mock.patch.object(chat_admin.MessageAdmin, "count_cap", 4),
        ):
            response = self.client.get(reverse("admin:chat_message_changelist"))
        self.assertEqual(response.context["cl"].result_count, 5)  # 6 rows, counted up to cap + 1
        self.assertContains(response, '<span data-testid="list-count">4+</span>', html=False)
        self.assertNotContains(response, "Show counts")

    def test_turn_rows_cannot_be_added_or_edited_but_can_be_deleted(self):
        """Only chat.turns writes turn rows: no add or change in the admin; delete stays available."""
        message_id = self.finished_turn("t-1", "text")
        self.assertEqual(self.client.get(reverse("admin:chat_message_add")).status_code, 403)
        response = self.client.post(reverse("admin:chat_message_change", args=[message_id]), {"content": "edited"})
        self.assertEqual(response.status_code, 403)
        self.assertEqual(Message.objects.get(pk=message_id).content, "text")
        response = self.client.post(reverse("admin:chat_message_delete", args=[message_id]), {"post": "yes"})
        self.assertEqual(response.status_code, 302)
        self.assertFalse(Message.objects.filter(pk=message_id).exists())

    def test_streaming_message_page_shows_content_and_pieces_in_order(self):
        """A streaming message's page shows its whole text so far (content + pieces) and its pending tool call."""
        message_id = self.streaming_turn(pieces=("alpha ", "beta ", "gamma"))
        page = self.client.get(reverse("admin:chat_message_change", args=[message_id])).content.decode()
        self.assertIn("alpha beta gamma", page)
        self.assertIn("calculator", page)

    def test_text_written_by_users_or_models_is_escaped(self):
        """HTML in a message appears escaped in the list and on the message page, never as markup."""
        turns.persist_user_turn(self.thread.pk, "t-x", XSS)
        message = Message.objects.get(turn_id="t-x")
        for url in (
            reverse("admin:chat_message_changelist") + "?q=onerror",
            reverse("admin:chat_message_change", args=[message.pk]),
        ):
            page = self.client.get(url).content.decode()
            self.assertNotIn("<img src=x", page, url)
            self.assertNotIn("<script>window.__xss", page, url)
            self.assertIn("&lt;img src=x onerror=window.__xss=1&gt;", page, url)

    def test_search_finds_messages_by_turn_id_content_and_user(self):
        """The message search matches turn ids, text and the owner's username."""
        self.finished_turn("turn-findme", "needle in the answer")
        other = self.make_user("bob")
        bob_thread = self.make_thread(other)
        turns.persist_user_turn(bob_thread.pk, "b-1", "words of the second user")
        url = reverse("admin:chat_message_changelist")
        self.assertEqual(self.client.get(url, {"q": "turn-findme"}).context["cl"].result_count, 2)
        self.assertEqual(self.client.get(url, {"q": "needle"}).context["cl"].result_count, 1)
        # "bob" is only in the owner's username: neither the turn id nor the text has it.
        self.assertEqual(self.client.get(url, {"q": "bob"}).context["cl"].result_count, 1)

    def test_message_filters_by_status_role_and_provider(self):
        """Status, role and provider (metadata agent / model) filters narrow the list."""
        self.finished_turn("t-ok", "fine")
        self.finished_turn("t-bad", "broken", status="failed")
        url = reverse("admin:chat_message_changelist")
        self.assertEqual(self.client.get(url, {"status": "failed"}).context["cl"].result_count, 1)
        self.assertEqual(self.client.get(url, {"role": "user"}).context["cl"].result_count, 2)
        self.assertEqual(self.client.get(url, {"provider": "local|local"}).context["cl"].result_count, 2)
        self.assertEqual(self.client.get(url, {"provider": "openai|gpt"}).context["cl"].result_count, 0)

    def test_message_filter_by_date(self):
        """The created-at filter keeps messages of the chosen days only."""
        self.finished_turn("t-now", "today")
        self.finished_turn("t-old", "long ago")
        Message.objects.filter(turn_id="t-old").update(created_at=timezone.now() - timedelta(days=40))
        url = reverse("admin:chat_message_changelist")
        midnight = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
        today = {"created_at__gte": midnight.isoformat(), "created_at__lt": (midnight + timedelta(days=1)).isoformat()}
        listed = self.client.get(url, today).context["cl"].result_list
        self.assertEqual({m.turn_id for m in listed}, {"t-now"})


class LiveTurnsTests(AdminTestCase):
    def test_live_data_lists_running_turns_with_text_actions_and_user(self):
        """The JSON has each running turn: user, thread, turn id, full text so far, actions."""
        message_id = self.streaming_turn(pieces=("one ", "two ", "three"))
        body = self.client.get(reverse("admin:chat_message_live_data")).json()
        [turn] = body["turns"]
        self.assertEqual(turn["message_id"], message_id)
        self.assertTrue(turn["running"])
        self.assertEqual(turn["user"], "alice")
        self.assertEqual(turn["turn_id"], "t-live")
        self.assertEqual(turn["text"], "one two three")
        self.assertEqual(turn["words"], 3)  # progress while the model has reported no tokens yet
        self.assertEqual(turn["question"], "/lorem 9")
        self.assertEqual([(a["tool"], a["status"]) for a in turn["actions"]], [("calculator", "pending")])

    def test_live_text_is_the_tail_of_a_long_answer_in_order(self):
        """A long streaming answer shows its last LIVE_TEXT_LIMIT characters in order, however its pieces are stored."""
        turns.persist_user_turn(self.thread.pk, "t-long", "/lorem 5000")
        message_id = turns.persist_assistant_shell(self.thread.pk, "t-long", agent="local", model="local").id
        pieces = [f"{i:05d} " for i in range(1000)]  # 6,000 code points, each piece unique
        starts = [6 * i for i in range(1000)]
        # Stored newest first, so a read that does not order by `start` shows it.
        MessageChunk.objects.bulk_create(
            MessageChunk(message_id=message_id, start=start, text=piece)
            for start, piece in reversed(list(zip(starts, pieces, strict=True)))
        )
        Message.objects.filter(pk=message_id).update(content_length=6000)
        [turn] = self.client.get(reverse("admin:chat_message_live_data")).json()["turns"]
        self.assertEqual(turn["text"], "".join(pieces)[-reports.LIVE_TEXT_LIMIT :])
        self.assertEqual((turn["length"], turn["truncated"]), (6000, True))
        self.assertEqual(turn["question"], "/lorem 5000")

    def test_finished_long_answer_shows_its_tail(self):
        """A finished answer longer than the limit shows its end, cut in SQL."""
        text = "".join(f"{i:05d} " for i in range(1000))
        self.finished_turn("t-done-long", text)
        [turn] = self.client.get(reverse("admin:chat_message_live_data")).json()["turns"]
        self.assertEqual(turn["text"], text[-reports.LIVE_TEXT_LIMIT :])
        self.assertTrue(turn["truncated"])

    def test_finished_turns_stay_listed_for_a_while_with_their_tokens(self):
        """A turn that just ended is listed as not running, with its token usage."""
        self.finished_turn(
            "t-done", "done", {"model": "local", "prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}
        )
        [turn] = self.client.get(reverse("admin:chat_message_live_data")).json()["turns"]
        self.assertFalse(turn["running"])
        self.assertEqual(turn["usage"]["total_tokens"], 3)

    def test_live_page_renders_for_staff(self):
        """The page answers 200 with its data endpoint and the current turns embedded."""
        self.streaming_turn()
        response = self.client.get(reverse("admin:chat_message_live"))
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, reverse("admin:chat_message_live_data"))
        self.assertContains(response, 'id="live-initial"')

    def test_cancel_flags_the_running_turn(self):
        """POST cancel asks the turn to stop (the flag reaches a turn in any process)."""
        message_id = self.streaming_turn()
        url = reverse("admin:chat_message_live_cancel", args=[message_id])
        response = self.client.post(url, HTTP_ACCEPT="application/json")
        self.assertEqual(response.json(), {"cancelled": True, "message_id": message_id})
        self.assertTrue(Message.objects.get(pk=message_id).cancel_requested)

    def test_cancel_of_a_finished_turn_reports_nothing_to_cancel(self):
        """A turn that already ended is not cancelled again."""
        message_id = self.finished_turn("t-done", "done")
        response = self.client.post(
            reverse("admin:chat_message_live_cancel", args=[message_id]), HTTP_ACCEPT="application/json"
        )
        self.assertEqual(response.json()["cancelled"], False)

    def test_cancel_needs_post_and_the_csrf_token(self):
        """GET is refused, and a POST without the CSRF token is rejected."""
        message_id = self.streaming_turn()
        url = reverse("admin:chat_message_live_cancel", args=[message_id])
        self.assertEqual(self.client.get(url).status_code, 405)
        strict = Client(enforce_csrf_checks=True)
        strict.force_login(self.staff)
        self.assertEqual(strict.post(url).status_code, 403)
        self.assertFalse(Message.objects.get(pk=message_id).cancel_requested)

    def test_staff_pages_are_closed_to_users_who_are_not_staff(self):
        """A logged-in non-staff user is sent to the admin login from every staff page."""
        message_id = self.streaming_turn()
        client = Client()
        client.force_login(self.alice)
        for url in (
            reverse("admin:chat_message_live"),
            reverse("admin:chat_message_live_data"),
            reverse("admin:chat_tokenusage_report"),
        ):
            response = client.get(url)
            self.assertEqual(response.status_code, 302, url)
            self.assertIn("/admin/login/", response["Location"])
        client.post(reverse("admin:chat_message_live_cancel", args=[message_id]))
        self.assertFalse(Message.objects.get(pk=message_id).cancel_requested)


class UsageReportTests(AdminTestCase):
    def record_usage(self, turn_id: str, model: str, total: int, cost: int, days_ago: int = 0, user=None) -> None:
        message_id = self.finished_turn(
            turn_id,
            "text",
            {
                "model": model,
                "prompt_tokens": total - 1,
                "completion_tokens": 1,
                "total_tokens": total,
                "cost_micros": cost,
            },
        )
        usage = TokenUsage.objects.filter(message_id=message_id)
        usage.update(created_at=timezone.now() - timedelta(days=days_ago), **({"user": user} if user else {}))

    def test_report_sums_per_day_model_and_user_over_the_range(self):
        """Totals per model, per user and per day cover the chosen days only."""
        bob = self.make_user("bob")
        self.record_usage("a", "gpt-4o-mini", 10, 1500)
        self.record_usage("b", "local", 5, 0)
        self.record_usage("c", "gpt-4o-mini", 20, 3000, days_ago=2, user=bob)
        self.record_usage("old", "gpt-4o-mini", 1000, 9999, days_ago=40)
        today = timezone.now().date()
        response = self.client.get(
            reverse("admin:chat_tokenusage_report"),
            {"start": (today - timedelta(days=6)).isoformat(), "end": today.isoformat()},
        )
        self.assertEqual(response.status_code, 200)
        report = response.context["report"]
        self.assertEqual(report["totals"]["total_tokens"], 35)
        self.assertEqual(report["totals"]["cost_micros"], 4500)
        self.assertEqual(
            {row["model"]: row["total_tokens"] for row in report["per_model"]}, {"gpt-4o-mini": 30, "local": 5}
        )
        self.assertEqual(
            {row["user__username"]: row["total_tokens"] for row in report["per_user"]}, {"alice": 15, "bob": 20}
        )
        self.assertEqual(len(report["days"]), 7)
        self.assertEqual(report["days"][-1]["total_tokens"], 15)
        self.assertEqual(report["days"][-3]["total_tokens"], 20)
        chart = response.context["chart"]
        self.assertEqual(chart["models"], ["gpt-4o-mini", "local"])
        self.assertEqual(chart["tokens"]["gpt-4o-mini"][-3:], [20, 0, 10])

    def test_report_defaults_to_the_last_30_days_and_survives_bad_dates(self):
        """Without (or with unreadable) dates the range is the last 30 days."""
        for params in ({}, {"start": "garbage", "end": "2026-13-45"}):
            response = self.client.get(reverse("admin:chat_tokenusage_report"), params)
            self.assertEqual(response.status_code, 200)
            self.assertEqual(len(response.context["report"]["days"]), 30)

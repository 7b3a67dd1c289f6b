"""The JSON HTTP API of docs/protocol.md."""

from __future__ import annotations

import json

from django.test import Client

from chat import turns
from chat.models import Message, Thread
from tests.base import PASSWORD, ChatTestCase


class ApiTestCase(ChatTestCase):
    def setUp(self) -> None:
        self.alice = self.make_user("alice")
        self.bob = self.make_user("bob")
        self.http = self.login(self.alice)

    def login(self, user, enforce_csrf: bool = False) -> Client:
        client = Client(enforce_csrf_checks=enforce_csrf)
        self.assertTrue(client.login(username=user.username, password=PASSWORD))
        return client

    def post(self, client: Client, path: str, body, **headers):
        data = body if isinstance(body, str) else json.dumps(body)
        return client.post(path, data, content_type="application/json", **headers)


class ThreadListTests(ApiTestCase):
    def test_create_thread(self):
        """POST /api/threads/ answers 201 with the thread object."""
        response = self.post(self.http, "/api/threads/", {"title": "Plans"})
        self.assertEqual(response.status_code, 201)
        body = response.json()
        self.assertEqual(set(body), {"id", "title", "agent", "system_prompt", "created_at", "updated_at"})
        self.assertEqual(body["title"], "Plans")
        self.assertEqual(Thread.objects.get(pk=body["id"]).owner, self.alice)

    def test_title_is_optional(self):
        """A thread can be created with an empty body."""
        response = self.http.post("/api/threads/", "", content_type="application/json")
        self.assertEqual(response.status_code, 201)
        self.assertEqual(response.json()["title"], "")

    def test_list_is_own_threads_newest_first(self):
        """GET /api/threads/ lists only the user's threads, the most recently active first."""
        first = self.make_thread(self.alice, "first")
        second = self.make_thread(self.alice, "second")
        self.make_thread(self.bob, "not mine")
        turns.persist_user_turn(first.pk, "t1", "bump")  # activity makes `first` the newest
        response = self.http.get("/api/threads/")
        self.assertEqual(response.status_code, 200)
        self.assertEqual([t["id"] for t in response.json()["threads"]], [first.pk, second.pk])

    def test_bad_bodies_are_refused_and_change_nothing(self):
        """Invalid JSON, a non-object body or a bad title is a 400 with an error code; nothing is created."""
        cases = [
            ("{nope", "invalid_json"),
            ("[1]", "invalid_json"),
            ({"title": 5}, "invalid_title"),
            ({"title": "x" * 201}, "invalid_title"),
        ]
        for body, code in cases:
            with self.subTest(body=body):
                response = self.post(self.http, "/api/threads/", body)
                self.assertEqual(response.status_code, 400)
                self.assertEqual(response.json()["error"]["code"], code)
        self.assertEqual(Thread.objects.count(), 0)

    def test_csrf_token_is_required_on_post(self):
        """An unsafe call without the CSRF token is refused with a JSON 403."""
        client = self.login(self.alice, enforce_csrf=True)
        response = self.post(client, "/api/threads/", {"title": "x"})
        self.assertEqual(response.status_code, 403)
        self.assertEqual(response.json()["error"]["code"], "csrf_failed")
        client.get("/accounts/login/")  # sets the csrftoken cookie
        token = client.cookies["csrftoken"].value
        response = self.post(client, "/api/threads/", {"title": "x"}, HTTP_X_CSRFTOKEN=token)
        self.assertEqual(response.status_code, 201)

    def test_anonymous_calls_get_401(self):
        """Without a login every API call answers 401 JSON, not a redirect."""
        thread = self.make_thread(self.alice)
        anonymous = Client()
        for method, path in [
            ("get", "/api/threads/"),
            ("post", "/api/threads/"),
            ("get", f"/api/threads/{thread.pk}/"),
        ]:
            with self.subTest(method=method, path=path):
                response = getattr(anonymous, method)(path)
                self.assertEqual(response.status_code, 401)
                self.assertEqual(response.json()["error"]["code"], "not_authenticated")

    def test_other_methods_are_405(self):
        """PUT on the list is not allowed."""
        self.assertEqual(self.http.put("/api/threads/").status_code, 405)


class ThreadDetailTests(ApiTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.thread = self.make_thread(self.alice, "mine")

    def test_detail_has_messages_in_seq_order_with_actions_and_usage(self):
        """GET /api/threads/<id>/ returns every message in the contract's shape, in seq order."""
        turns.persist_user_turn(self.thread.pk, "t1", "what is 1+1", [{"id": 3, "title": "Doc", "document_type": "md"}])
        shell = turns.persist_assistant_shell(self.thread.pk, "t1", agent="local", model="local")
        action = turns.start_action(shell.id, "c1", "calculator", {"expression": "1+1"})
        turns.finish_action(action.id, "success", {"result": 2})
        turns.append_content(shell.id, "It is 2.")
        turns.finalize_assistant_turn(
            shell.id,
            "completed",
            usage={"model": "local", "prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6, "cost_micros": 0},
        )
        body = self.http.get(f"/api/threads/{self.thread.pk}/").json()
        self.assertEqual(body["id"], self.thread.pk)
        user, answer = body["messages"]
        self.assertEqual(
            set(answer),
            {
                "id",
                "seq",
                "parent_id",
                "versions",
                "role",
                "turn_id",
                "status",
                "content",
                "metadata",
                "actions",
                "usage",
                "created_at",
                "updated_at",
            },
        )
        self.assertEqual((user["seq"], user["role"], user["metadata"]["mentioned_documents"][0]["id"]), (1, "user", 3))
        self.assertEqual((answer["seq"], answer["status"], answer["content"]), (2, "completed", "It is 2."))
        self.assertEqual(answer["metadata"]["streaming"], False)
        self.assertEqual(
            answer["usage"],
            {"model": "local", "prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6, "cost_micros": 0},
        )
        (act,) = answer["actions"]
        for key in ("id", "call_id", "tool", "input", "output", "status", "started_at", "finished_at"):
            self.assertIn(key, act)
        self.assertEqual((act["tool"], act["status"], act["output"]), ("calculator", "success", {"result": 2}))
        self.assertIsNone(user["usage"])

    def test_streaming_message_shows_all_committed_text(self):
        """A message still streaming shows every appended piece, status streaming and streaming=true."""
        turns.persist_user_turn(self.thread.pk, "t1", "hi")
        shell = turns.persist_assistant_shell(self.thread.pk, "t1")
        for piece in ("one ", "two ", "three"):
            turns.append_content(shell.id, piece)
        answer = self.http.get(f"/api/threads/{self.thread.pk}/").json()["messages"][1]
        self.assertEqual(
            (answer["content"], answer["status"], answer["metadata"]["streaming"]), ("one two three", "streaming", True)
        )

    def test_other_users_thread_is_404(self):
        """Another user's thread answers 404, exactly like a missing one, for every method."""
        bob = self.login(self.bob)
        path = f"/api/threads/{self.thread.pk}/"
        responses = [
            bob.get(path),
            bob.patch(path, '{"title": "x"}', content_type="application/json"),
            bob.delete(path),
        ]
        for response in responses:
            self.assertEqual(response.status_code, 404)
            self.assertEqual(response.json()["error"]["code"], "not_found")
        self.assertEqual(self.http.get("/api/threads/999999/").status_code, 404)
        self.assertEqual(Thread.objects.get(pk=self.thread.pk).title, "mine")

    def test_rename(self):
        """PATCH with a title renames the thread."""
        response = self.http.patch(
            f"/api/threads/{self.thread.pk}/", json.dumps({"title": "renamed"}), content_type="application/json"
        )
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json()["title"], "renamed")
        self.assertEqual(Thread.objects.get(pk=self.thread.pk).title, "renamed")

    def test_delete_removes_the_thread_and_its_messages(self):
        """DELETE answers 204 and removes the thread with its messages."""
        turns.persist_user_turn(self.thread.pk, "t1", "hi")
        response = self.http.delete(f"/api/threads/{self.thread.pk}/")
        self.assertEqual(response.status_code, 204)
        self.assertFalse(Thread.objects.filter(pk=self.thread.pk).exists())
        self.assertFalse(Message.objects.exists())


class FaviconTests(ChatTestCase):
    def test_favicon_ico_leads_to_the_icon(self):
        """/favicon.ico is not a 404: it redirects to the page's SVG icon, which is served."""
        response = Client().get("/favicon.ico")
        self.assertEqual(response.status_code, 301)
        self.assertTrue(response["Location"].endswith("/chat/favicon.svg"))
        icon = Client().get(response["Location"])
        self.assertEqual(icon.status_code, 200)

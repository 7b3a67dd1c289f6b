"""Agents (PROTOCOL.md "Agents"): the API, the per-thread agent and prompt, turns that use them, the admin."""

from __future__ import annotations

import json

from django.test import Client, override_settings

from agents.catalog import default_agent
from chat.models import Agent, Message, Thread
from tests.base import ChatTestCase
from tests.fake_openai import FakeOpenAI, Stream, chat_chunks
from tests.test_socket import SocketTestCase

SECRET = "sk-test-secret-4242"


class AgentApiTests(ChatTestCase):
    def setUp(self) -> None:
        self.alice = self.make_user("alice")
        self.http = Client()
        self.http.force_login(self.alice)

    def post(self, body) -> object:
        return self.http.post("/api/threads/", json.dumps(body), content_type="application/json")

    def patch(self, thread_id: int, body) -> object:
        return self.http.patch(f"/api/threads/{thread_id}/", json.dumps(body), content_type="application/json")

    def test_agents_list_has_the_default_and_no_secrets(self):
        """GET /api/agents/: the default agent from the environment, its model, no URL and no key."""
        with override_settings(
            AGENT_PROVIDER="openai", OPENAI_BASE_URL="http://127.0.0.1:9/v1", OPENAI_API_KEY=SECRET, OPENAI_MODEL="m1"
        ):
            response = self.http.get("/api/agents/")
        (agent,) = response.json()["agents"]
        self.assertEqual(set(agent), {"id", "name", "description", "model", "default"})
        self.assertEqual((agent["name"], agent["model"], agent["default"]), ("openai", "m1", True))
        self.assertNotIn(SECRET, response.content.decode())
        self.assertNotIn("127.0.0.1:9", response.content.decode())

    def test_default_agent_follows_the_environment(self):
        """The default agent row is updated when the provider settings change; there is only ever one."""
        first = default_agent()
        with override_settings(AGENT_PROVIDER="openai", OPENAI_MODEL="m2", OPENAI_API_KEY=SECRET):
            changed = default_agent()
        self.assertEqual(first.pk, changed.pk)
        self.assertEqual((changed.provider, changed.model, changed.api_key), ("openai", "m2", SECRET))
        self.assertEqual(sorted(changed.tools), ["calculator", "clock"])
        self.assertEqual(default_agent().model, "local")
        self.assertEqual(Agent.objects.filter(is_default=True).count(), 1)

    def test_new_thread_gets_the_default_agent_and_a_chosen_one_when_named(self):
        """POST /api/threads/ without agent: the default; with an agent id and system prompt: those."""
        body = self.post({"title": "a"}).json()
        self.assertEqual((body["agent"], body["system_prompt"]), (default_agent().pk, ""))
        helper = Agent.objects.create(name="helper", model="local", tools=["clock"])
        body = self.post({"agent": helper.pk, "system_prompt": "Be brief."}).json()
        self.assertEqual((body["agent"], body["system_prompt"]), (helper.pk, "Be brief."))

    def test_unknown_agent_and_long_system_prompt_are_refused_and_store_nothing(self):
        """invalid_agent for an unknown id (or not a number), invalid_system_prompt over 8000 characters."""
        thread = self.make_thread(self.alice, "kept")
        for body, code in (
            ({"agent": 999_999}, "invalid_agent"),
            ({"agent": True}, "invalid_agent"),
            ({"agent": "1"}, "invalid_agent"),
            ({"system_prompt": "x" * 8001}, "invalid_system_prompt"),
            ({"system_prompt": 5}, "invalid_system_prompt"),
        ):
            for response in (self.post(body), self.patch(thread.pk, {"title": "changed", **body})):
                self.assertEqual(response.status_code, 400)
                self.assertEqual(response.json()["error"]["code"], code)
        self.assertEqual(Thread.objects.filter(owner=self.alice).count(), 1)
        self.assertEqual(Thread.objects.get(pk=thread.pk).title, "kept")
        self.assertEqual(self.post({"system_prompt": "x" * 8000}).status_code, 201)

    def test_patch_changes_only_the_named_fields(self):
        """PATCH agent, then system_prompt, then title: each leaves the other fields as they were."""
        thread_id = self.post({"title": "t", "system_prompt": "p"}).json()["id"]
        helper = Agent.objects.create(name="helper", model="local")
        self.assertEqual(self.patch(thread_id, {"agent": helper.pk}).json()["system_prompt"], "p")
        body = self.patch(thread_id, {"system_prompt": "q"}).json()
        self.assertEqual((body["title"], body["agent"], body["system_prompt"]), ("t", helper.pk, "q"))
        body = self.patch(thread_id, {"title": "u"}).json()
        self.assertEqual((body["title"], body["agent"], body["system_prompt"]), ("u", helper.pk, "q"))

    def test_a_thread_whose_agent_is_deleted_shows_the_default(self):
        """Deleting a thread's agent leaves the thread on the default agent."""
        helper = Agent.objects.create(name="helper", model="local")
        thread_id = self.post({"agent": helper.pk}).json()["id"]
        helper.delete()
        self.assertEqual(self.http.get(f"/api/threads/{thread_id}/").json()["agent"], default_agent().pk)


@override_settings(LOCAL_MODEL_DELAY_MS=0)
class AgentTurnTests(SocketTestCase):
    async def use(self, **fields) -> Agent:
        """Create an agent and make it the thread's."""
        agent = await Agent.objects.acreate(**fields)
        await Thread.objects.filter(pk=self.thread.pk).aupdate(agent=agent)
        return agent

    async def test_agent_prompt_then_thread_prompt_reach_the_model(self):
        """An agent whose prompt says 'Reply in capitals' answers in upper case; agent_started names it."""
        await self.use(name="Shouty", model="local-shout", system_prompt="Reply in CAPITALS.", tools=[])
        communicator, _ = await self.connect()
        frames = await self.turn(communicator, "hello there", "t1")
        self.assertEqual(frames[1]["data"], {"agent": "Shouty", "model": "local-shout"})
        end = frames[-1]
        self.assertEqual(end["data"]["usage"]["model"], "local-shout")
        self.assertEqual(end["data"]["usage"]["prompt_tokens"], 3 + 2)  # the system prompt's words count
        text = "".join(f["data"]["delta"] for f in frames if f["type"] == "message_delta")
        self.assertEqual(text, text.upper())
        self.assertIn("HELLO THERE", text)

    async def test_thread_system_prompt_is_followed_with_the_default_agent(self):
        """The thread's own system prompt reaches the model after the (empty) default agent's."""
        await Thread.objects.filter(pk=self.thread.pk).aupdate(system_prompt="please reply in capitals")
        communicator, _ = await self.connect()
        frames = await self.turn(communicator, "quiet words", "t1")
        self.assertEqual(frames[1]["data"], {"agent": "local", "model": "local"})
        text = "".join(f["data"]["delta"] for f in frames if f["type"] == "message_delta")
        self.assertIn("QUIET WORDS", text)

    async def test_agent_without_calculator_answers_arithmetic_without_calling_it(self):
        """An agent with only the clock tool: '2+3' gets an answer and no tool call."""
        await self.use(name="NoCalc", model="local", tools=["clock"])
        communicator, _ = await self.connect()
        frames = await self.turn(communicator, "what is 2+3", "t1")
        kinds = [f["type"] for f in frames]
        self.assertNotIn("tool_executing", kinds)
        self.assertEqual(frames[-1]["data"]["status"], "completed")
        frames = await self.turn(communicator, "what time is it", "t2")
        self.assertIn("tool_executing", [f["type"] for f in frames])

    async def test_deleted_agent_runs_the_thread_with_the_default(self):
        """A thread whose agent was deleted runs its next turn with the default agent."""
        agent = await self.use(name="Gone", model="local-gone", tools=[])
        await agent.adelete()
        communicator, _ = await self.connect()
        frames = await self.turn(communicator, "hi", "t1")
        self.assertEqual(frames[1]["data"], {"agent": "local", "model": "local"})

    async def test_markdown_turn_stores_the_markdown_exactly(self):
        """/markdown through the socket: the rebuilt deltas and the stored content are the model's Markdown."""
        from agents.providers.local import MARKDOWN

        communicator, _ = await self.connect()
        frames = await self.turn(communicator, "/markdown", "md")
        message_id = frames[-1]["message_id"]
        streamed = "".join(f["data"]["delta"] for f in frames if f["type"] == "message_delta")
        self.assertEqual(streamed, MARKDOWN)
        self.assertEqual((await Message.objects.aget(pk=message_id)).content, MARKDOWN)

    async def test_openai_agent_uses_its_own_server_key_model_tools_and_prompts(self):
        """An OpenAI-compatible agent: its URL, key and model, only its tools, its prompt then the thread's."""
        server = FakeOpenAI([Stream(chat_chunks(["Hi", " there."], usage=(9, 2)))]).start()
        self.addCleanup(server.stop)
        await self.use(
            name="Remote",
            provider="openai",
            base_url=server.url,
            api_key=SECRET,
            model="remote-model",
            system_prompt="Agent rules.",
            tools=["clock"],
        )
        await Thread.objects.filter(pk=self.thread.pk).aupdate(system_prompt="Thread rules.")
        communicator, _ = await self.connect()
        with self.assertLogs(level="DEBUG") as logs:
            frames = await self.turn(communicator, "hello", "t1")
        self.assertEqual(frames[1]["data"], {"agent": "Remote", "model": "remote-model"})
        self.assertEqual(frames[-1]["data"]["status"], "completed")
        (request,) = server.requests
        self.assertEqual(request.body["model"], "remote-model")
        self.assertEqual(
            request.headers.get("Authorization") or request.headers.get("authorization"), f"Bearer {SECRET}"
        )
        self.assertEqual(request.body["messages"][0], {"role": "system", "content": "Agent rules.\n\nThread rules."})
        self.assertEqual([tool["function"]["name"] for tool in request.body["tools"]], ["clock"])
        self.assertFalse(any(SECRET in line for line in logs.output))


class AgentAdminTests(ChatTestCase):
    def setUp(self) -> None:
        self.staff = self.make_user("root", is_staff=True, is_superuser=True)
        self.http = Client()
        self.http.force_login(self.staff)
        self.default = default_agent()

    def test_staff_create_an_agent_and_its_key_is_never_shown(self):
        """The add form stores name, provider, model, prompt, tools and key; no admin page shows the key."""
        response = self.http.post(
            "/admin/chat/agent/add/",
            {
                "name": "Remote",
                "description": "A remote model",
                "provider": "openai",
                "base_url": "http://127.0.0.1:9/v1",
                "api_key": SECRET,
                "model": "remote-model",
                "system_prompt": "Be kind.",
                "tools": ["calculator"],
            },
        )
        self.assertEqual(response.status_code, 302, response.content.decode()[:2000])
        agent = Agent.objects.get(name="Remote")
        self.assertEqual((agent.api_key, agent.model, agent.tools), (SECRET, "remote-model", ["calculator"]))
        for page in (
            "/admin/chat/agent/",
            f"/admin/chat/agent/{agent.pk}/change/",
            f"/admin/chat/agent/{agent.pk}/history/",
        ):
            body = self.http.get(page).content.decode()
            self.assertNotIn(SECRET, body, page)
        # Saving without typing a key keeps the stored one.
        self.http.post(
            f"/admin/chat/agent/{agent.pk}/change/",
            {"name": "Remote", "provider": "openai", "model": "remote-model", "tools": ["clock"]},
        )
        agent.refresh_from_db()
        self.assertEqual((agent.api_key, agent.tools), (SECRET, ["clock"]))

    def test_the_default_agent_cannot_be_deleted(self):
        """The default agent's delete page and a bulk delete that includes it are refused."""
        other = Agent.objects.create(name="other", model="local")
        self.assertEqual(self.http.get(f"/admin/chat/agent/{self.default.pk}/delete/").status_code, 403)
        for selected, status in (([self.default.pk, other.pk], 403), ([other.pk], 302)):
            response = self.http.post(
                "/admin/chat/agent/", {"action": "delete_selected", "_selected_action": selected, "post": "yes"}
            )
            self.assertEqual(response.status_code, status)
        self.assertTrue(Agent.objects.filter(pk=self.default.pk).exists())
        self.assertFalse(Agent.objects.filter(pk=other.pk).exists())

    def test_default_agent_page_shows_its_environment_settings_read_only(self):
        """The default agent's change page opens and offers no key field."""
        with override_settings(AGENT_PROVIDER="openai", OPENAI_API_KEY=SECRET, OPENAI_MODEL="m1"):
            default_agent()
            response = self.http.get(f"/admin/chat/agent/{self.default.pk}/change/")
        self.assertEqual(response.status_code, 200)
        body = response.content.decode()
        self.assertNotIn(SECRET, body)
        self.assertNotIn('name="api_key"', body)

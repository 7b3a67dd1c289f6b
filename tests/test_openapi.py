"""docs/openapi.json describes the HTTP API as it answers: every route, method, status and body.

Each documented operation is driven through Django's test client (CSRF
checks on, as for a browser) into each of its documented statuses, and the
real body is validated against the schema of that status. A route of
web.urls missing from the description, or a documented status no case
reaches, fails.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.http import HttpResponse
from django.test import Client, override_settings
from django.urls import Resolver404, resolve
from jsonschema import Draft202012Validator, ValidationError
from openapi_spec_validator import validate as validate_openapi
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from chat import turns
from tests.base import PASSWORD, ChatTestCase
from web import urls as web_urls

SPEC_PATH = Path(settings.BASE_DIR) / "docs" / "openapi.json"
SPEC = json.loads(SPEC_PATH.read_text())
SPEC_URI = "urn:chat-openapi"
REGISTRY = Registry().with_resource(SPEC_URI, Resource(contents=SPEC, specification=DRAFT202012))
METHODS = ("get", "post", "put", "patch", "delete")


def pointer(*parts: str) -> str:
    """A JSON pointer into the description, its parts escaped."""
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in parts)


def validator(schema_pointer: str) -> Draft202012Validator:
    """A validator of the schema at `schema_pointer`, resolving the description's $refs, checking formats."""
    return Draft202012Validator(
        {"$ref": f"{SPEC_URI}#{schema_pointer}"},
        registry=REGISTRY,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def documented_response(path: str, method: str, status: int) -> tuple[dict, str]:
    """The response object the description gives for (path, method, status), and its pointer ($ref followed)."""
    at = pointer("paths", path, method, "responses", str(status))
    response = SPEC["paths"][path][method]["responses"][str(status)]
    if "$ref" in response:
        at = response["$ref"].removeprefix("#")
        response = SPEC["components"]["responses"][at.rsplit("/", 1)[-1]]
    return response, at


def openapi_path(route: str) -> str:
    """A Django route (`threads/<int:thread_id>/`) as an OpenAPI path (`/threads/{thread_id}/`)."""
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)


@dataclass
class Case:
    """One request that should get `status` from a documented operation."""

    method: str
    path: str  # as documented, with {thread_id}
    status: int
    send: Callable[[], HttpResponse]
    note: str


class OpenApiTests(ChatTestCase):
    def setUp(self) -> None:
        self.alice = self.make_user("alice")
        self.bob = self.make_user("bob")
        self.thread = self.make_thread(self.alice, "Sums")
        self.other = self.make_thread(self.bob, "Not alice's")
        self.record_turns(self.thread.pk)
        self.alice_http = self.browser(self.alice)
        self.anonymous = self.browser(None)

    def browser(self, user) -> Client:
        """A client with CSRF checks on and a CSRF cookie, logged in as `user` (None: anonymous)."""
        client = Client(enforce_csrf_checks=True)
        if user is not None:
            self.assertTrue(client.login(username=user.username, password=PASSWORD))
        client.get("/accounts/login/")  # sets the csrftoken cookie, as a browser's first visit does
        return client

    def record_turns(self, thread_id: int) -> None:
        """Turns of every kind, written as the runtime writes them: a tool call, usage, an error, one still running."""
        documents = [{"id": 7, "title": "Spec", "document_type": "pdf"}, {"id": 8}]
        turns.persist_user_turn(thread_id, "t-1", "what is 2+3*4", documents)
        answer = turns.persist_assistant_shell(thread_id, "t-1", agent="local", model="local").id
        action = turns.start_action(answer, "call_calculator", "calculator", {"expression": "2+3*4"}).id
        turns.finish_action(action, "success", {"expression": "2+3*4", "result": 14})
        turns.append_content(answer, "The result is 14.")
        usage = {"model": "local", "prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14, "cost_micros": 0}
        turns.finalize_assistant_turn(answer, "completed", usage)
        turns.persist_user_turn(thread_id, "t-2", "/fail 2")
        failed = turns.persist_assistant_shell(thread_id, "t-2", agent="local", model="local").id
        turns.append_content(failed, "lorem ipsum ")
        error = {"code": "provider_unavailable", "message": "The local model failed (/fail).", "retryable": True}
        turns.finalize_assistant_turn(failed, "failed", error=error)
        turns.persist_user_turn(thread_id, "t-3", "what time is it")
        running = turns.persist_assistant_shell(thread_id, "t-3", agent="local", model="local").id
        turns.append_content(running, "The current ")
        turns.start_action(running, "call_clock", "clock", {})

    def first_message(self) -> str:
        """A PATCH body switching to the thread's first message."""
        first = self.thread.messages.order_by("seq").values_list("pk", flat=True).first()
        return json.dumps({"active_message_id": first})

    def export_body(self) -> str:
        """The JSON export of Alice's thread, as an import body."""
        return self.send(self.alice_http, "get", f"/api/threads/{self.thread.pk}/export/").content.decode()

    def send(self, client: Client, method: str, path: str, body: str | None = None, csrf: bool = True):
        headers = {"HTTP_X_CSRFTOKEN": client.cookies["csrftoken"].value} if csrf and method != "get" else {}
        call = getattr(client, method)
        if body is None:
            return call(path, **headers)
        return call(path, body, content_type="application/json", **headers)

    def health_with_the_layer_down(self) -> HttpResponse:
        with override_settings(CHANNEL_LAYERS={"default": {"BACKEND": "tests.layers.DownChannelLayer"}}):
            return self.anonymous.get("/healthz")

    def cases(self) -> list[Case]:
        alice, anonymous = self.alice_http, self.anonymous
        mine, other = f"/api/threads/{self.thread.pk}/", f"/api/threads/{self.other.pk}/"
        listed, detail, page = "/api/threads/", "/api/threads/{thread_id}/", f"/threads/{self.thread.pk}/"
        long_title = json.dumps({"title": "x" * 201})
        exported, imported = "/api/threads/{thread_id}/export/", "/api/threads/import/"

        def login(password: str) -> Callable[[], HttpResponse]:
            token = anonymous.cookies["csrftoken"].value
            form = {"username": "alice", "password": password, "csrfmiddlewaretoken": token}
            return lambda: anonymous.post("/accounts/login/", form)

        return [
            Case("get", listed, 200, lambda: self.send(alice, "get", "/api/threads/"), "own threads"),
            Case("get", listed, 401, lambda: self.send(anonymous, "get", "/api/threads/"), "anonymous"),
            Case("post", listed, 201, lambda: self.send(alice, "post", listed, '{"title": "New"}'), ""),
            Case("post", listed, 201, lambda: self.send(alice, "post", listed, ""), "empty body"),
            Case("post", listed, 400, lambda: self.send(alice, "post", listed, "{nope"), "not JSON"),
            Case("post", listed, 400, lambda: self.send(alice, "post", listed, long_title), "title"),
            Case("post", listed, 401, lambda: self.send(anonymous, "post", listed, "{}"), "anonymous"),
            Case("post", listed, 403, lambda: self.send(alice, "post", listed, "{}", False), "no CSRF"),
            Case("get", detail, 200, lambda: self.send(alice, "get", mine), "every kind of message"),
            Case("get", detail, 401, lambda: self.send(anonymous, "get", mine), "anonymous"),
            Case("get", detail, 404, lambda: self.send(alice, "get", other), "another user's thread"),
            Case("get", detail, 404, lambda: self.send(alice, "get", "/api/threads/999999/"), "no such thread"),
            Case("patch", detail, 200, lambda: self.send(alice, "patch", mine, '{"title": "Renamed"}'), ""),
            Case("patch", detail, 400, lambda: self.send(alice, "patch", mine, "[1]"), "not an object"),
            Case("patch", detail, 401, lambda: self.send(anonymous, "patch", mine, "{}"), "anonymous"),
            Case("patch", detail, 403, lambda: self.send(alice, "patch", mine, "{}", False), "no CSRF"),
            Case("patch", detail, 404, lambda: self.send(alice, "patch", other, '{"title": "mine now"}'), "other's"),
            Case("patch", detail, 400, lambda: self.send(alice, "patch", mine, '{"agent": 999999}'), "unknown agent"),
            Case(
                "patch",
                detail,
                404,
                lambda: self.send(alice, "patch", mine, '{"active_message_id": 0}'),
                "no such message",
            ),
            Case("patch", detail, 200, lambda: self.send(alice, "patch", mine, self.first_message()), "switch version"),
            Case("get", "/api/agents/", 200, lambda: self.send(alice, "get", "/api/agents/"), ""),
            Case("get", "/api/agents/", 401, lambda: self.send(anonymous, "get", "/api/agents/"), "anonymous"),
            Case("get", "/api/search/", 200, lambda: self.send(alice, "get", "/api/search/?q=result"), ""),
            Case("get", "/api/search/", 400, lambda: self.send(alice, "get", "/api/search/?q=x"), "too short"),
            Case("get", "/api/search/", 401, lambda: self.send(anonymous, "get", "/api/search/?q=result"), "anonymous"),
            Case("get", exported, 200, lambda: self.send(alice, "get", f"{mine}export/"), "JSON"),
            Case("get", exported, 200, lambda: self.send(alice, "get", f"{mine}export/?format=markdown"), "Markdown"),
            Case("get", exported, 400, lambda: self.send(alice, "get", f"{mine}export/?format=pdf"), "format"),
            Case("get", exported, 401, lambda: self.send(anonymous, "get", f"{mine}export/"), "anonymous"),
            Case("get", exported, 404, lambda: self.send(alice, "get", f"{other}export/"), "another user's thread"),
            Case("post", imported, 201, lambda: self.send(alice, "post", imported, self.export_body()), ""),
            Case("post", imported, 400, lambda: self.send(alice, "post", imported, '{"format": "x"}'), "not an export"),
            Case("post", imported, 401, lambda: self.send(anonymous, "post", imported, "{}"), "anonymous"),
            Case("post", imported, 403, lambda: self.send(alice, "post", imported, "{}", False), "no CSRF"),
            Case("get", "/favicon.ico", 301, lambda: anonymous.get("/favicon.ico"), ""),
            Case("delete", detail, 401, lambda: self.send(anonymous, "delete", mine), "anonymous"),
            Case("delete", detail, 403, lambda: self.send(alice, "delete", mine, csrf=False), "no CSRF"),
            Case("delete", detail, 404, lambda: self.send(alice, "delete", other), "another user's thread"),
            Case("delete", detail, 204, lambda: self.send(alice, "delete", mine), "last: the thread goes"),
            Case("get", "/", 200, lambda: alice.get("/"), ""),
            Case("get", "/", 302, lambda: anonymous.get("/"), "anonymous"),
            Case("get", "/threads/{thread_id}/", 200, lambda: alice.get(page), ""),
            Case("get", "/threads/{thread_id}/", 302, lambda: anonymous.get(page), "anonymous"),
            Case("get", "/healthz", 200, lambda: anonymous.get("/healthz"), ""),
            Case("get", "/healthz", 503, lambda: self.health_with_the_layer_down(), "channel layer down"),
            Case("get", "/accounts/login/", 200, lambda: anonymous.get("/accounts/login/"), ""),
            Case("post", "/accounts/login/", 200, login("wrong-password"), "wrong password"),
            Case("post", "/accounts/logout/", 302, lambda: self.send(alice, "post", "/accounts/logout/"), ""),
            Case("post", "/accounts/login/", 302, login(PASSWORD), "last: anonymous logs in"),
        ]

    def assertAnswersAsDocumented(self, case: Case, response: HttpResponse) -> None:
        label = f"{case.method.upper()} {case.path} ({case.note or case.status})"
        self.assertEqual(response.status_code, case.status, f"{label}: {response.content[:300]!r}")
        documented, at = documented_response(case.path, case.method, case.status)
        content = documented.get("content", {})
        media = response.headers.get("Content-Type", "").split(";")[0]
        if not content:
            self.assertEqual(response.content, b"", f"{label}: the description gives no body")
        else:
            self.assertIn(media, content, f"{label}: {media} is not a documented media type")
        for header in documented.get("headers", {}):
            self.assertIn(header, response.headers, f"{label}: documented header {header} missing")
        if media == "application/json":
            errors = validator(at + pointer("content", media, "schema")).iter_errors(response.json())
            problems = [f"{'/'.join(map(str, e.absolute_path)) or 'body'}: {e.message}" for e in errors]
            self.assertFalse(problems, f"{label}: the body does not match the description:\n" + "\n".join(problems))

    def test_every_documented_status_is_the_real_answer(self):
        """Each operation answers each documented status with a body matching its schema, and no status goes untried."""
        tried = set()
        for case in self.cases():
            with self.subTest(case.method, path=case.path, status=case.status, note=case.note):
                self.assertAnswersAsDocumented(case, case.send())
            tried.add((case.path, case.method, str(case.status)))
        documented = {
            (path, method, status)
            for path, item in SPEC["paths"].items()
            for method in METHODS
            if method in item
            for status in item[method]["responses"]
        }
        self.assertEqual(documented - tried, set(), "documented statuses no case reaches")
        self.assertEqual(tried - documented, set(), "statuses the cases reach that are not documented")

    def test_every_route_is_described(self):
        """Each route of web/urls.py is a path of docs/openapi.json, and each documented path is served."""
        routes = {openapi_path(str(pattern.pattern)) for pattern in web_urls.urlpatterns}
        self.assertEqual(routes - set(SPEC["paths"]), set(), "routes of web/urls.py missing from docs/openapi.json")
        for path in SPEC["paths"]:
            try:
                resolve(path.replace("{thread_id}", "1"))
            except Resolver404:
                self.fail(f"docs/openapi.json describes {path}, which no URL serves")

    def test_the_description_is_valid_openapi(self):
        """docs/openapi.json is a valid OpenAPI 3.1 document, so that tools can read it."""
        self.assertEqual(SPEC["openapi"][:4], "3.1.")
        validate_openapi(SPEC)

    def test_a_body_unlike_the_description_is_caught(self):
        """The schemas are strict: an unknown field, a missing one or a bad time in a thread fails validation."""
        check = validator(pointer("components", "schemas", "Thread"))
        good = {
            "id": 1,
            "title": "t",
            "agent": 1,
            "system_prompt": "",
            "created_at": "2026-12-01T10:00:00+00:00",
            "updated_at": "2026-12-01T10:00:00Z",
        }
        check.validate(good)
        for bad in ({**good, "extra": 1}, {"id": 1, "title": "t"}, {**good, "created_at": "yesterday"}):
            with self.subTest(bad=bad), self.assertRaises(ValidationError):
                check.validate(bad)

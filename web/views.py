"""The JSON HTTP API of docs/protocol.md (described in docs/openapi.json): parse, authorize, delegate."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_http_methods

from agents import catalog, control, intake
from chat import agent_store, exports, search, selectors
from chat import threads as thread_writes
from chat.models import Thread

from .text import all_storable

View = Callable[..., HttpResponse]


def api_error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


def api_login_required(view: View) -> View:
    """401 JSON instead of a login redirect: API clients are not browsers."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return api_error(401, "not_authenticated", "Log in first.")
        return view(request, *args, **kwargs)

    return wrapper


def _owner(request: HttpRequest) -> User:
    """The logged-in user of a request that api_login_required let through."""
    assert isinstance(request.user, User)
    return request.user


def _json_body(request: HttpRequest) -> dict | JsonResponse:
    """The body as a JSON object (empty when there is none), or the 400 answer refusing it.

    Refused: anything not a JSON object, nesting too deep to parse, and text
    that is not valid Unicode storable on every database (a lone surrogate or NUL).
    """
    if not request.body:
        return {}
    try:
        body = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        return api_error(400, "invalid_json", "The body must be a JSON object.")
    except RecursionError:
        return api_error(400, "invalid_json", "The body is nested too deeply to parse.")
    if not isinstance(body, dict):
        return api_error(400, "invalid_json", "The body must be a JSON object.")
    if not all_storable(body):
        return api_error(
            400, "invalid_json", "The body holds text that is not valid Unicode (a lone surrogate or NUL)."
        )
    return body


def _thread_fields(body: dict) -> dict[str, Any] | JsonResponse:
    """The thread fields a body names (title, agent, system_prompt), checked; or the 400 answer refusing it."""
    fields: dict[str, Any] = {}
    if "title" in body:
        title = "" if body["title"] is None else body["title"]
        if not isinstance(title, str):
            return api_error(400, "invalid_title", "title must be text.")
        fields["title"] = title  # its length is checked by chat.threads (ThreadRefused)
    if "agent" in body:
        agent = body["agent"]
        if not isinstance(agent, int) or isinstance(agent, bool) or not agent_store.agent_exists(agent):
            return api_error(400, "invalid_agent", "agent is not the id of an agent (GET /api/agents/).")
        fields["agent_id"] = agent
    if "system_prompt" in body:
        prompt = "" if body["system_prompt"] is None else body["system_prompt"]
        if not isinstance(prompt, str) or len(prompt) > thread_writes.MAX_SYSTEM_PROMPT:
            return api_error(
                400,
                "invalid_system_prompt",
                f"system_prompt must be text of at most {thread_writes.MAX_SYSTEM_PROMPT} characters.",
            )
        fields["system_prompt"] = prompt
    return fields


@api_login_required
@require_http_methods(["GET", "POST"])
def threads(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return JsonResponse({"threads": selectors.list_threads(_owner(request))})
    body = _json_body(request)
    if isinstance(body, JsonResponse):
        return body
    fields = _thread_fields(body)
    if isinstance(fields, JsonResponse):
        return fields
    fields.setdefault("agent_id", catalog.default_agent().pk)
    try:
        thread = thread_writes.create_thread(_owner(request), **fields)
    except thread_writes.ThreadRefused as exc:
        return api_error(403 if exc.code == "too_many_threads" else 400, exc.code, exc.message)
    return JsonResponse(selectors.thread_dict(thread), status=201)


@api_login_required
@require_http_methods(["GET", "PATCH", "DELETE"])
def thread_detail(request: HttpRequest, thread_id: int) -> HttpResponse:
    thread = selectors.own_thread(request.user, thread_id)
    if thread is None:
        return api_error(404, "not_found", "No such thread.")
    if request.method == "GET":
        return JsonResponse(selectors.thread_detail(thread))
    if request.method == "DELETE":
        control.delete_thread(thread)
        return HttpResponse(status=204)
    return _patch_thread(request, thread)


def _patch_thread(request: HttpRequest, thread: Thread) -> HttpResponse:
    """Change the fields the body names (title, agent, system_prompt, active_message_id); the others stay."""
    body = _json_body(request)
    if isinstance(body, JsonResponse):
        return body
    fields = _thread_fields(body)
    if isinstance(fields, JsonResponse):
        return fields
    active = body.get("active_message_id")
    if "active_message_id" in body and (
        not isinstance(active, int) or isinstance(active, bool) or not selectors.is_message_of(thread.pk, active)
    ):
        return api_error(404, intake.NOT_FOUND, "active_message_id is not a message of this thread.")
    if fields:
        try:
            thread_writes.update_thread(thread, **fields)
        except thread_writes.ThreadRefused as exc:
            return api_error(400, exc.code, exc.message)
    if isinstance(active, int):
        try:
            intake.switch_version_sync(thread.pk, active)
        except intake.Refused as exc:
            return api_error(404, exc.code, exc.message)
    return JsonResponse(selectors.thread_dict(thread))


@api_login_required
@require_http_methods(["GET"])
def agents(request: HttpRequest) -> HttpResponse:
    """The agents a thread may run with, the default first (so there is always one)."""
    catalog.default_agent()
    return JsonResponse({"agents": agent_store.list_agents()})


@api_login_required
@require_http_methods(["GET"])
def export_thread(request: HttpRequest, thread_id: int) -> HttpResponse:
    """The thread as a JSON export (every branch) or as Markdown (the active path), as an attachment."""
    thread = selectors.own_thread(request.user, thread_id)
    if thread is None:
        return api_error(404, "not_found", "No such thread.")
    kind = request.GET.get("format", "json")
    if kind == "json":
        body = json.dumps(selectors.thread_export(thread), ensure_ascii=False, indent=1)
        response = HttpResponse(body, content_type="application/json; charset=utf-8")
        suffix = "json"
    elif kind == "markdown":
        response = HttpResponse(
            exports.markdown(selectors.thread_detail(thread)), content_type="text/markdown; charset=utf-8"
        )
        suffix = "md"
    else:
        return api_error(400, "invalid_format", "format must be json or markdown.")
    response["Content-Disposition"] = f'attachment; filename="thread-{thread.pk}.{suffix}"'
    return response


@api_login_required
@require_http_methods(["POST"])
def import_thread(request: HttpRequest) -> HttpResponse:
    """A new thread of the caller from a JSON export; a body that is not a valid export stores nothing."""
    try:
        export = exports.parse_export(request.body)
    except RequestDataTooBig:
        return api_error(400, "invalid_export", "The export is larger than the server accepts.")
    except exports.InvalidExport as exc:
        return api_error(400, "invalid_export", str(exc))
    try:
        thread = thread_writes.import_thread(_owner(request), export, catalog.default_agent().pk)
    except thread_writes.ThreadRefused as exc:
        return api_error(403 if exc.code == "too_many_threads" else 400, exc.code, exc.message)
    return JsonResponse(selectors.thread_dict(thread), status=201)


QUERY_MIN, QUERY_MAX = 2, 200


@api_login_required
@require_http_methods(["GET"])
def search_messages(request: HttpRequest) -> HttpResponse:
    """The caller's messages holding every word of `q`."""
    query = request.GET.get("q", "").strip()
    if not QUERY_MIN <= len(query) <= QUERY_MAX:
        return api_error(400, "invalid_query", f"q must be {QUERY_MIN} to {QUERY_MAX} characters once trimmed.")
    return JsonResponse({"results": search.search_messages(_owner(request), query)})


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF refusals as JSON for the API, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return api_error(403, "csrf_failed", f"CSRF check failed: {reason}")
    from django.views.csrf import csrf_failure as default_failure

    return default_failure(request, reason)

"""The JSON HTTP API of docs/protocol.md (described in docs/openapi.json): parse, authorize, delegate."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_http_methods

from agents import control
from chat import selectors
from chat import threads as thread_writes

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


def _title_from(request: HttpRequest) -> str | JsonResponse:
    """The `title` of a JSON body (empty when absent), or the 400 answer refusing the body."""
    body = _json_body(request)
    if isinstance(body, JsonResponse):
        return body
    title = body.get("title")
    title = "" if title is None else title
    if not isinstance(title, str):
        return api_error(400, "invalid_title", "title must be text.")
    return title


@api_login_required
@require_http_methods(["GET", "POST"])
def threads(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return JsonResponse({"threads": selectors.list_threads(_owner(request))})
    title = _title_from(request)
    if isinstance(title, JsonResponse):
        return title
    try:
        thread = thread_writes.create_thread(_owner(request), title)
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
    title = _title_from(request)
    if isinstance(title, JsonResponse):
        return title
    try:
        return JsonResponse(selectors.thread_dict(thread_writes.rename_thread(thread, title)))
    except thread_writes.ThreadRefused as exc:
        return api_error(400, exc.code, exc.message)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF refusals as JSON for the API, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return api_error(403, "csrf_failed", f"CSRF check failed: {reason}")
    from django.views.csrf import csrf_failure as default_failure

    return default_failure(request, reason)

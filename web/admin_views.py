"""Staff pages of the admin: Live turns (socket pushes or polled JSON, cancel) and Usage (chart and tables).

Wired by `get_urls` of the Message and TokenUsage admins (web.admin), which
wrap each view in `admin_site.admin_view`: staff only, with the admin's login.
"""

from __future__ import annotations

from datetime import date, timedelta

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from agents.control import cancel_turn as control_cancel_turn
from chat import reports

from . import staff

DEFAULT_USAGE_DAYS = 30
MAX_USAGE_DAYS = 366


def _require(request: HttpRequest, perm: str) -> None:
    if not request.user.has_perm(perm):
        raise PermissionDenied


@require_GET
def live_turns(request: HttpRequest, admin_site: admin.AdminSite) -> HttpResponse:
    """The page; its script listens on the staff socket and polls `live_turns_data` while that is down."""
    _require(request, "chat.view_message")
    context = {
        **admin_site.each_context(request),
        "title": "Live turns",
        "data_url": reverse("admin:chat_message_live_data"),
        "cancel_url": reverse("admin:chat_message_live_cancel", args=[0]),
        "socket_path": "/" + staff.PATH,
        "can_cancel": request.user.has_perm("chat.change_message"),
        "recent_seconds": reports.RECENT_SECONDS,
        "turns": reports.live_turns(),
    }
    return TemplateResponse(request, "admin/chat/live_turns.html", context)


@require_GET
def live_turns_data(request: HttpRequest) -> JsonResponse:
    """Running turns and those that just finished, as JSON."""
    _require(request, "chat.view_message")
    return JsonResponse({"now": timezone.now().isoformat(), "turns": reports.live_turns()})


@require_POST
def cancel_turn(request: HttpRequest, message_id: int) -> HttpResponse:
    """Cancel the turn of an assistant message, in whichever server process runs it."""
    _require(request, "chat.change_message")
    turn = reports.turn_of_message(message_id)
    cancelled = False
    if turn is not None:
        thread_id, turn_id = turn
        cancelled = control_cancel_turn(thread_id, turn_id or None)
    if "application/json" in request.headers.get("Accept", ""):
        return JsonResponse({"cancelled": cancelled, "message_id": message_id}, status=200 if turn else 404)
    if cancelled:
        messages.success(request, f"Cancel requested for message {message_id}.")
    else:
        messages.warning(request, f"Message {message_id} has no running turn.")
    return redirect("admin:chat_message_live")


def _parse_day(value: str | None, default: date) -> date:
    try:
        return date.fromisoformat(value) if value else default
    except ValueError:
        return default


@require_GET
def usage(request: HttpRequest, admin_site: admin.AdminSite) -> HttpResponse:
    """Tokens and cost per day, per model and per user over `?start=YYYY-MM-DD&end=YYYY-MM-DD`."""
    _require(request, "chat.view_tokenusage")
    today = timezone.now().date()
    end = _parse_day(request.GET.get("end"), today)
    start = _parse_day(request.GET.get("start"), end - timedelta(days=DEFAULT_USAGE_DAYS - 1))
    if start > end:
        start, end = end, start
    if (end - start).days >= MAX_USAGE_DAYS:
        start = end - timedelta(days=MAX_USAGE_DAYS - 1)
    report = reports.usage_report(start, end)
    models = sorted({row["model"] for row in report["per_day_model"]})
    tokens = {(row["day"], row["model"]): row["total_tokens"] for row in report["per_day_model"]}
    chart = {
        "labels": [row["day"].isoformat() for row in report["days"]],
        "models": models,
        "tokens": {model: [tokens.get((row["day"], model), 0) for row in report["days"]] for model in models},
        "cost": [row["cost_micros"] / 1_000_000 for row in report["days"]],
    }
    presets = [
        ("Last 7 days", today - timedelta(days=6), today),
        ("Last 30 days", today - timedelta(days=29), today),
        ("Last 90 days", today - timedelta(days=89), today),
    ]
    context = {
        **admin_site.each_context(request),
        "title": "Token usage",
        "report": report,
        "chart": chart,
        "presets": [{"label": label, "start": s.isoformat(), "end": e.isoformat()} for label, s, e in presets],
    }
    return TemplateResponse(request, "admin/chat/usage.html", context)

"""Read-mostly admins for threads, messages, tool calls and token usage, plus the staff pages.

Turn rows are written only by chat.turns, so these admins show them and let
staff delete them, never edit or add. Text a user or a model wrote is shown
escaped (format_html), and a streaming message shows its full text so far.
"""

from __future__ import annotations

import json

from django.contrib import admin
from django.contrib.admin.options import InlineModelAdmin
from django.db.models import Count, Model, Prefetch, QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator

from chat.models import AgentAction, Message, MessageChunk, Thread, TokenUsage
from chat.reports import dollars
from chat.selectors import duration_ms, message_text

from . import admin_agents, admin_views  # noqa: F401  (admin_agents registers the Agent admin)

admin.site.site_header = "Chat administration"
admin.site.site_title = "Chat admin"
admin.site.index_title = "Threads, turns and usage"

PREVIEW_CHARS = 80


def _pre(value: object, css: str = "chat-pre") -> str:
    """Escaped, preformatted text or pretty JSON."""
    if value is None:
        return "-"
    if not isinstance(value, str):
        value = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
    return format_html('<pre class="{}">{}</pre>', css, value)


def _badge(value: str) -> str:
    return format_html('<span class="chat-badge chat-badge-{}">{}</span>', value, value)


def _link(viewname: str, pk: object, label: object) -> str:
    return format_html('<a href="{}">{}</a>', reverse(viewname, args=[pk]), label)


def _short_id(value: str) -> str:
    """A long turn id cut to fit a list column; the whole id is in the tooltip and searchable."""
    if not value:
        return "-"
    shown = value if len(value) <= 14 else value[:12] + "…"
    return format_html('<code title="{}">{}</code>', value, shown)


def _duration(action: AgentAction) -> str:
    ms = duration_ms(action)
    if ms is None:
        return "-"
    return f"{ms} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


class ReadOnlyAdmin(admin.ModelAdmin):
    """Shows rows and lets staff delete them; adding and editing belong to chat.turns."""

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


class ProviderFilter(admin.SimpleListFilter):
    """Assistant messages by the agent and model stored in their metadata."""

    title = "provider"
    parameter_name = "provider"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        pairs = (
            Message.objects.filter(role=Message.Role.ASSISTANT)
            .values_list("metadata__agent", "metadata__model")
            .distinct()
        )
        seen = sorted({(agent or "", model or "") for agent, model in pairs})
        return [(f"{agent}|{model}", f"{agent or '?'} / {model or '?'}") for agent, model in seen]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Message]) -> QuerySet[Message]:
        value = self.value()
        if not value:
            return queryset
        agent, _, model = value.partition("|")
        return queryset.filter(metadata__agent=agent, metadata__model=model)


# --- Thread --------------------------------------------------------------------


class MessageInline(ReadOnlyInline):
    model = Message
    fields = ("seq", "role", "status_badge", "turn_id", "preview", "created_at")
    readonly_fields = fields
    ordering = ("seq",)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return (
            super()
            .get_queryset(request)
            .prefetch_related(Prefetch("chunks", queryset=MessageChunk.objects.order_by("start")))
        )

    @admin.display(description="status")
    def status_badge(self, obj: Message) -> str:
        return _badge(obj.status)

    @admin.display(description="text")
    def preview(self, obj: Message) -> str:
        return Truncator(message_text(obj)).chars(PREVIEW_CHARS)


@admin.register(Thread)
class ThreadAdmin(ReadOnlyAdmin):
    list_display = ("id", "title_display", "owner", "message_count", "updated_at", "created_at")
    list_display_links = ("id", "title_display")
    list_filter = ("created_at", "updated_at")
    ordering = ("-updated_at",)
    search_fields = ("title", "owner__username", "messages__turn_id")
    list_select_related = ("owner",)
    date_hierarchy = "created_at"
    readonly_fields = ("title", "owner", "last_seq", "created_at", "updated_at")
    inlines = [MessageInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Thread]:
        return super().get_queryset(request).annotate(message_count=Count("messages"))

    @admin.display(description="title", ordering="title")
    def title_display(self, obj: Thread) -> str:
        return obj.title or f"(untitled #{obj.pk})"

    @admin.display(description="messages", ordering="message_count")
    def message_count(self, obj: Thread) -> int:
        return getattr(obj, "message_count", 0)  # annotated by get_queryset


# --- Message -------------------------------------------------------------------


class ActionDisplay:
    """Columns of a tool call shared by the inline and the AgentAction admin."""

    pre_class = "chat-pre"

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: AgentAction) -> str:
        return _badge(obj.status)

    @admin.display(description="input")
    def input_display(self, obj: AgentAction) -> str:
        return _pre(obj.input, self.pre_class)

    @admin.display(description="output")
    def output_display(self, obj: AgentAction) -> str:
        return _pre(obj.output, self.pre_class)

    @admin.display(description="duration")
    def duration(self, obj: AgentAction) -> str:
        return _duration(obj)


class AgentActionInline(ActionDisplay, ReadOnlyInline):
    model = AgentAction
    fields = (
        "tool",
        "status_badge",
        "call_id",
        "position",
        "input_display",
        "output_display",
        "started_at",
        "duration",
    )
    readonly_fields = fields
    pre_class = "chat-pre chat-pre-small"


@admin.register(Message)
class MessageAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "thread_link",
        "owner",
        "seq",
        "role",
        "status_badge",
        "turn",
        "provider",
        "preview",
        "created_at",
    )
    list_filter = ("status", "role", ProviderFilter, "created_at")
    ordering = ("-id",)
    search_fields = ("turn_id", "content", "thread__owner__username", "thread__title")
    list_select_related = ("thread", "thread__owner")
    date_hierarchy = "created_at"
    fields = (
        "thread_link",
        "owner",
        "seq",
        "role",
        "status_badge",
        "turn_id",
        "provider",
        "text",
        "content_length",
        "metadata_display",
        "usage_display",
        "heartbeat_at",
        "cancel_requested",
        "created_at",
        "updated_at",
    )
    readonly_fields = fields
    inlines = [AgentActionInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return (
            super()
            .get_queryset(request)
            .prefetch_related(Prefetch("chunks", queryset=MessageChunk.objects.order_by("start")), "usage_records")
        )

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("live/", view(self.live_turns_view), name="chat_message_live"),
            path("live/data/", view(admin_views.live_turns_data), name="chat_message_live_data"),
            path("live/<int:message_id>/cancel/", view(admin_views.cancel_turn), name="chat_message_live_cancel"),
            *super().get_urls(),
        ]

    def live_turns_view(self, request: HttpRequest) -> HttpResponse:
        return admin_views.live_turns(request, self.admin_site)

    def get_inlines(self, request: HttpRequest, obj: Message | None = None) -> list[type[InlineModelAdmin]]:
        return self.inlines if obj is not None and obj.role == Message.Role.ASSISTANT else []

    @admin.display(description="turn id", ordering="turn_id")
    def turn(self, obj: Message) -> str:
        return _short_id(obj.turn_id)

    @admin.display(description="thread", ordering="thread")
    def thread_link(self, obj: Message) -> str:
        return _link("admin:chat_thread_change", obj.thread_id, obj.thread)

    @admin.display(description="user", ordering="thread__owner__username")
    def owner(self, obj: Message) -> str:
        return obj.thread.owner.get_username()

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Message) -> str:
        return _badge(obj.status)

    @admin.display(description="provider")
    def provider(self, obj: Message) -> str:
        metadata = obj.metadata or {}
        if obj.role != Message.Role.ASSISTANT:
            return "-"
        return f"{metadata.get('agent') or '?'} / {metadata.get('model') or '?'}"

    @admin.display(description="text")
    def preview(self, obj: Message) -> str:
        return Truncator(message_text(obj)).chars(PREVIEW_CHARS)

    @admin.display(description="text (full, so far when streaming)")
    def text(self, obj: Message) -> str:
        return _pre(message_text(obj), "chat-pre chat-pre-text")

    @admin.display(description="metadata")
    def metadata_display(self, obj: Message) -> str:
        return _pre(obj.metadata)

    @admin.display(description="token usage")
    def usage_display(self, obj: Message) -> str:
        usage = next(iter(obj.usage_records.all()), None)
        if usage is None:
            return "-"
        return format_html(
            '<a href="{}">{} tokens</a> ({} prompt, {} completion) · {} · ${}',
            reverse("admin:chat_tokenusage_change", args=[usage.pk]),
            usage.total_tokens,
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.model or "?",
            dollars(usage.cost_micros),
        )


# --- AgentAction -----------------------------------------------------------------


@admin.register(AgentAction)
class AgentActionAdmin(ActionDisplay, ReadOnlyAdmin):
    list_display = (
        "id",
        "tool",
        "status_badge",
        "message_link",
        "owner",
        "call_id",
        "position",
        "duration",
        "started_at",
    )
    list_filter = ("status", "tool", "started_at")
    ordering = ("-id",)
    search_fields = ("call_id", "tool", "message__turn_id", "message__thread__owner__username")
    list_select_related = ("message", "message__thread", "message__thread__owner")
    date_hierarchy = "started_at"
    fields = (
        "message_link",
        "owner",
        "tool",
        "status_badge",
        "call_id",
        "position",
        "input_display",
        "output_display",
        "started_at",
        "finished_at",
        "duration",
    )
    readonly_fields = fields

    @admin.display(description="message", ordering="message")
    def message_link(self, obj: AgentAction) -> str:
        return format_html(
            '{} <span class="chat-quiet">turn</span> {}',
            _link("admin:chat_message_change", obj.message_id, f"#{obj.message_id}"),
            _short_id(obj.message.turn_id),
        )

    @admin.display(description="user", ordering="message__thread__owner__username")
    def owner(self, obj: AgentAction) -> str:
        return obj.message.thread.owner.get_username()


# --- TokenUsage --------------------------------------------------------------------


@admin.register(TokenUsage)
class TokenUsageAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "user",
        "model",
        "usage_type",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "cost",
        "message_link",
        "thread_link",
    )
    list_filter = ("model", "usage_type", "created_at")
    ordering = ("-created_at",)
    search_fields = ("user__username", "model", "message__turn_id")
    list_select_related = ("user", "message", "thread")
    date_hierarchy = "created_at"
    fields = (
        "user",
        "model",
        "usage_type",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "cost",
        "message_link",
        "thread_link",
        "breakdown_display",
        "calls_display",
        "created_at",
    )
    readonly_fields = fields

    def get_urls(self) -> list[URLPattern]:
        return [
            path("report/", self.admin_site.admin_view(self.usage_view), name="chat_tokenusage_report"),
            *super().get_urls(),
        ]

    def usage_view(self, request: HttpRequest) -> HttpResponse:
        return admin_views.usage(request, self.admin_site)

    @admin.display(description="cost ($)", ordering="cost_micros")
    def cost(self, obj: TokenUsage) -> str:
        return dollars(obj.cost_micros)

    @admin.display(description="message", ordering="message")
    def message_link(self, obj: TokenUsage) -> str:
        if obj.message_id is None:
            return "-"
        return _link("admin:chat_message_change", obj.message_id, f"#{obj.message_id}")

    @admin.display(description="thread", ordering="thread")
    def thread_link(self, obj: TokenUsage) -> str:
        if obj.thread_id is None:
            return "-"
        return _link("admin:chat_thread_change", obj.thread_id, obj.thread)

    @admin.display(description="per model")
    def breakdown_display(self, obj: TokenUsage) -> str:
        return _pre(obj.model_breakdown)

    @admin.display(description="model calls")
    def calls_display(self, obj: TokenUsage) -> str:
        if not obj.call_details:
            return "-"
        return format_html(
            '<table class="chat-mini"><tr><th>model</th><th>prompt</th><th>completion</th>'
            "<th>cost (µ$)</th></tr>{}</table>",
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                (
                    (
                        c.get("model", ""),
                        c.get("prompt_tokens", 0),
                        c.get("completion_tokens", 0),
                        c.get("cost_micros", 0),
                    )
                    for c in obj.call_details
                    if isinstance(c, dict)
                ),
            ),
        )

"""Read-mostly admins for threads, messages, tool calls and token usage, plus the staff pages.

Turn rows are written only by chat.turns, so these admins show them and let
staff delete them, never edit or add. Text a user or a model wrote is shown
escaped (format_html), and a streaming message shows its full text so far on
its page. Lists stay as fast with a million rows as with a hundred: previews
are cut in SQL (chat.reports), counts stop at COUNT_CAP, filters offer fixed
choices instead of a DISTINCT over the table, and no list has a date
hierarchy (its year links are a DISTINCT over every row).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, cast

from django.conf import settings
from django.contrib import admin
from django.core.paginator import Paginator
from django.db.models import Prefetch, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join

from agents.tools import TOOLS
from chat import reports
from chat.models import AgentAction, Message, MessageChunk, Thread, TokenUsage
from chat.reports import dollars
from chat.selectors import duration_ms, message_text

from . import admin_agents, admin_views  # noqa: F401  (admin_agents registers the Agent admin)

admin.site.site_header = "Chat administration"
admin.site.site_title = "Chat admin"
admin.site.index_title = "Threads, turns and usage"
# The header links to the staff pages and the breadcrumbs to the lists; the
# sidebar would take a quarter of a 1280 px screen from every list.
admin.site.enable_nav_sidebar = False

# Rows a list counts at most: past it the list says "10000+" and pages up to there.
COUNT_CAP = 10_000
# Messages shown inline on a thread's page (the latest); the rest are in the message list.
INLINE_MESSAGES = 50


class CappedPaginator(Paginator):
    """Counts at most COUNT_CAP + 1 rows, so a list's count costs the same at any table size."""

    @cached_property
    def count(self) -> int:
        rows = cast(QuerySet, self.object_list)
        return rows.order_by().values("pk")[: COUNT_CAP + 1].count()


def _pre(value: Any, css: str = "chat-pre") -> str:
    """Escaped, preformatted text or pretty JSON."""
    if value is None:
        return "-"
    if not isinstance(value, str):
        value = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
    return format_html('<pre class="{}">{}</pre>', css, value)


def _badge(value: str) -> str:
    return format_html('<span class="chat-badge chat-badge-{}">{}</span>', value, value)


def _link(viewname: str, pk: Any, label: Any) -> str:
    return format_html('<a href="{}">{}</a>', reverse(viewname, args=[pk]), label)


def _when(value: datetime | None) -> str:
    """A time in a list column: short, sortable, in the server's time zone, the exact time in the tooltip."""
    if value is None:
        return "-"
    local = timezone.localtime(value)
    return format_html(
        '<time datetime="{}" title="{}">{}</time>', value.isoformat(), local, local.strftime("%Y-%m-%d %H:%M")
    )


def _cut(value: str, limit: int = 40) -> str:
    """A title cut to fit a list column, the whole of it in the tooltip."""
    shown = value if len(value) <= limit else value[: limit - 1] + "…"
    return format_html('<span class="chat-preview" title="{}">{}</span>', value, shown)


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

    paginator = CappedPaginator
    count_cap = COUNT_CAP  # templates/admin/chat/pagination.html says "10000+" past it
    list_per_page = 50
    show_full_result_count = False  # a second count, of the whole table, on every filtered page
    show_facets = admin.ShowFacets.NEVER  # a count per filter choice, each over the whole table

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class FixedChoicesFilter(admin.SimpleListFilter):
    """A filter on one column whose choices come from the configuration, never from a DISTINCT over the table."""

    field = ""

    def choices_from_settings(self) -> list[str]:
        raise NotImplementedError

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(value, value) for value in self.choices_from_settings()]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(**{self.field: self.value()}) if self.value() else queryset


def known_models() -> list[str]:
    """The models this server is configured to price or call."""
    return sorted({*settings.MODEL_PRICES, settings.OPENAI_MODEL, "local"})


class ProviderFilter(admin.SimpleListFilter):
    """Assistant messages by the agent and model in their metadata; choices are the configured providers."""

    title = "provider"
    parameter_name = "provider"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        pairs = [("local", "local")] + [("openai", model) for model in known_models() if model != "local"]
        return [(f"{agent}|{model}", f"{agent} / {model}") for agent, model in pairs]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if not self.value():
            return queryset
        agent, _, model = (self.value() or "").partition("|")
        return queryset.filter(metadata__agent=agent, metadata__model=model)


class ToolFilter(FixedChoicesFilter):
    title = "tool"
    parameter_name = field = "tool"

    def choices_from_settings(self) -> list[str]:
        return sorted(TOOLS)


class ModelFilter(FixedChoicesFilter):
    title = "model"
    parameter_name = field = "model"

    def choices_from_settings(self) -> list[str]:
        return known_models()


class UsageTypeFilter(FixedChoicesFilter):
    title = "usage type"
    parameter_name = field = "usage_type"

    def choices_from_settings(self) -> list[str]:
        return ["turn"]


# --- Thread --------------------------------------------------------------------


class LatestMessagesFormSet(BaseInlineFormSet):
    """The thread's latest INLINE_MESSAGES messages only; the thread's page links to the rest."""

    def get_queryset(self) -> QuerySet:
        queryset = super().get_queryset()
        if not queryset.query.is_sliced:
            queryset = self._queryset = queryset[:INLINE_MESSAGES]
        return queryset


class MessageInline(ReadOnlyInline):
    model = Message
    formset = LatestMessagesFormSet
    fields = ("seq", "role", "status_badge", "turn_id", "preview", "created_at")
    readonly_fields = fields
    ordering = ("-seq",)
    verbose_name_plural = f"latest messages (at most {INLINE_MESSAGES}, newest first)"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return reports.with_previews(super().get_queryset(request))

    @admin.display(description="status")
    def status_badge(self, obj: Message) -> str:
        return _badge(obj.status)

    @admin.display(description="text")
    def preview(self, obj: Message) -> str:
        return format_html('<span class="chat-preview">{}</span>', reports.preview(obj))


@admin.register(Thread)
class ThreadAdmin(ReadOnlyAdmin):
    list_display = ("id", "title_display", "owner", "message_count", "updated", "created")
    list_display_links = ("id", "title_display")
    list_filter = ("created_at", "updated_at")
    ordering = ("-updated_at",)
    search_fields = ("title", "owner__username", "messages__turn_id")
    list_select_related = ("owner",)
    fields = ("title", "owner", "last_seq", "all_messages", "created_at", "updated_at")
    readonly_fields = fields
    inlines = [MessageInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return reports.with_message_counts(super().get_queryset(request))

    @admin.display(description="updated", ordering="updated_at")
    def updated(self, obj: Thread) -> str:
        return _when(obj.updated_at)

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Thread) -> str:
        return _when(obj.created_at)

    @admin.display(description="title", ordering="title")
    def title_display(self, obj: Thread) -> str:
        title = obj.title or f"(untitled #{obj.pk})"
        return format_html('<span class="chat-preview" title="{}">{}</span>', title, title)

    @admin.display(description="messages", ordering="message_count")
    def message_count(self, obj: Thread) -> int:
        return getattr(obj, "message_count", None) or 0

    @admin.display(description="messages")
    def all_messages(self, obj: Thread) -> str:
        url = reverse("admin:chat_message_changelist") + f"?thread__id__exact={obj.pk}"
        count = self.message_count(obj)
        shown = min(count, INLINE_MESSAGES)
        return format_html(
            "{} in all; the latest {} are below. "
            '<a href="{}" data-testid="thread-all-messages">All {} in the message list</a>',
            count,
            shown,
            url,
            count,
        )


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
        "role",
        "status_badge",
        "turn",
        "provider",
        "preview",
        "created",
    )
    list_filter = ("status", "role", ProviderFilter, "created_at")
    ordering = ("-id",)
    search_fields = ("turn_id", "content", "thread__owner__username", "thread__title")
    list_select_related = ("thread", "thread__owner")
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
        """The list's rows: previews cut in SQL, the text itself not read."""
        return reports.with_previews(super().get_queryset(request))

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> Message | None:
        """The message's page: its whole text (content and every piece) and its usage."""
        queryset = (
            super()
            .get_queryset(request)
            .select_related("thread__owner")
            .prefetch_related(Prefetch("chunks", queryset=MessageChunk.objects.order_by("start")), "usage_records")
        )
        try:
            return queryset.filter(pk=int(object_id)).first()
        except (TypeError, ValueError):
            return None

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("live/", view(self.live_turns_view), name="chat_message_live"),
            path("live/data/", view(admin_views.live_turns_data), name="chat_message_live_data"),
            path("live/<int:message_id>/cancel/", view(admin_views.cancel_turn), name="chat_message_live_cancel"),
            *super().get_urls(),
        ]

    def live_turns_view(self, request: HttpRequest) -> Any:
        return admin_views.live_turns(request, self.admin_site)

    def get_inlines(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.inlines if obj is not None and obj.role == Message.Role.ASSISTANT else []

    @admin.display(description="turn id", ordering="turn_id")
    def turn(self, obj: Message) -> str:
        return _short_id(obj.turn_id)

    @admin.display(description="thread", ordering="thread")
    def thread_link(self, obj: Message) -> str:
        return _link("admin:chat_thread_change", obj.thread_id, _cut(str(obj.thread)))

    @admin.display(description="user", ordering="thread__owner__username")
    def owner(self, obj: Message) -> str:
        return obj.thread.owner.get_username()

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Message) -> str:
        return _badge(obj.status)

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Message) -> str:
        return _when(obj.created_at)

    @admin.display(description="provider")
    def provider(self, obj: Message) -> str:
        metadata = obj.metadata or {}
        if obj.role != Message.Role.ASSISTANT:
            return "-"
        return f"{metadata.get('agent') or '?'} / {metadata.get('model') or '?'}"

    @admin.display(description="text")
    def preview(self, obj: Message) -> str:
        return format_html('<span class="chat-preview">{}</span>', reports.preview(obj))

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
        "started",
    )
    list_filter = ("status", ToolFilter, "started_at")
    ordering = ("-id",)
    search_fields = ("call_id", "tool", "message__turn_id", "message__thread__owner__username")
    list_select_related = ("message", "message__thread", "message__thread__owner")
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

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        """Tool calls with their message's turn id and owner; the message's text is not read."""
        return super().get_queryset(request).defer("message__content", "message__metadata")

    @admin.display(description="started", ordering="started_at")
    def started(self, obj: AgentAction) -> str:
        return _when(obj.started_at)

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
        "created",
        "user",
        "model",
        "usage_type",
        "prompt",
        "completion",
        "total",
        "cost",
        "message_link",
        "thread_link",
    )
    list_filter = (ModelFilter, UsageTypeFilter, "created_at")
    ordering = ("-created_at",)
    search_fields = ("user__username", "model", "message__turn_id")
    list_select_related = ("user", "thread")
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

    def usage_view(self, request: HttpRequest) -> Any:
        return admin_views.usage(request, self.admin_site)

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: TokenUsage) -> str:
        return _when(obj.created_at)

    @admin.display(description="prompt", ordering="prompt_tokens")
    def prompt(self, obj: TokenUsage) -> int:
        return obj.prompt_tokens

    @admin.display(description="completion", ordering="completion_tokens")
    def completion(self, obj: TokenUsage) -> int:
        return obj.completion_tokens

    @admin.display(description="total", ordering="total_tokens")
    def total(self, obj: TokenUsage) -> int:
        return obj.total_tokens

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
        return _link("admin:chat_thread_change", obj.thread_id, _cut(str(obj.thread)))

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

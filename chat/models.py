"""Threads, their messages, the tool calls of assistant messages, and token usage.

Turn rows are written only by `chat.turns` (and, for an import, copied once
by `chat.threads.import_thread`); see that module for the rules (idempotency
per turn, append-only streaming content, usage once per message).
"""

from django.conf import settings
from django.db import models
from django.db.models import Q


class Agent(models.Model):
    """A model and its instructions that a thread runs with, configured by staff in the admin.

    Exactly one row is the default (`is_default`): it follows the
    environment's provider settings (see agents.catalog) and cannot be deleted.
    """

    class Provider(models.TextChoices):
        LOCAL = "local"
        OPENAI = "openai", "OpenAI-compatible"

    name = models.CharField(max_length=100)
    description = models.CharField(max_length=300, blank=True, default="")
    provider = models.CharField(max_length=16, choices=Provider.choices, default=Provider.LOCAL)
    # OpenAI-compatible servers only; empty means the public OpenAI API.
    base_url = models.URLField(max_length=500, blank=True, default="")
    # Secret: never shown by the API, the admin's pages or logs.
    api_key = models.CharField(max_length=500, blank=True, default="")
    model = models.CharField(max_length=100, blank=True, default="")
    # Sent to the model before the thread's own system prompt.
    system_prompt = models.TextField(blank=True, default="")
    # Names of the tools (agents.tools.TOOLS) this agent may call.
    tools = models.JSONField(default=list, blank=True)
    is_default = models.BooleanField(default=False, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-is_default", "name", "id"]
        constraints = [
            # One default agent, whatever two processes syncing it at once do.
            models.UniqueConstraint(fields=["is_default"], condition=Q(is_default=True), name="chat_agent_one_default"),
        ]

    def __str__(self) -> str:
        return self.name


class Thread(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="threads")
    title = models.CharField(max_length=200, blank=True, default="")
    # The agent its turns run with; null (or deleted) means the default agent.
    agent = models.ForeignKey(Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="threads")
    # Sent to the model after the agent's system prompt.
    system_prompt = models.TextField(blank=True, default="")
    # The last message of the active path (see chat.selectors.active_path);
    # null only while the thread has no message.
    active_leaf = models.ForeignKey("Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # Highest `Message.seq` handed out in this thread. Incremented with
    # UPDATE ... RETURNING in the inserting transaction, so the row lock
    # serializes concurrent writers and a rolled-back insert gives its number back.
    last_seq = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            # The thread list: one owner's threads, newest first.
            models.Index(fields=["owner", "-updated_at"], name="chat_thread_owner_recent"),
            # The admin's thread list: every thread, newest first (ORDER BY updated_at DESC LIMIT 100).
            models.Index(fields=["-updated_at"], name="chat_thread_recent"),
            # The admin's thread list filtered by creation date.
            models.Index(fields=["created_at"], name="chat_thread_created"),
        ]

    def __str__(self) -> str:
        return self.title or f"Thread {self.pk}"


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    class Status(models.TextChoices):
        STREAMING = "streaming"
        COMPLETED = "completed"
        CANCELLED = "cancelled"
        FAILED = "failed"
        INTERRUPTED = "interrupted"

    thread = models.ForeignKey(Thread, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=16, choices=Role.choices)
    # The message this one follows (null: a first message); messages with the
    # same parent are versions of one another. The FK's index serves the
    # sibling and child reads of chat.selectors.
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="children")
    # The client's (or server's) id of the turn this message belongs to; one
    # user and one assistant message share it. Empty only for imported rows.
    turn_id = models.CharField(max_length=64, blank=True, default="")
    # 1, 2, 3 ... per thread in creation order (see Thread.last_seq).
    seq = models.PositiveIntegerField()
    # The full text once the message is final. While it streams, the text is
    # `content` followed by its MessageChunk rows; `content_length` counts both.
    content = models.TextField(blank=True, default="")
    # Length in code points (Python's len) of the full text, chunks included:
    # the `offset` of the next delta.
    content_length = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.COMPLETED)
    # Flags the contract exposes: streaming, cancelled, has_error, error,
    # mentioned_documents (user messages), agent, model.
    metadata = models.JSONField(default=dict, blank=True)
    # Touched by the process running the turn; a stale heartbeat on a
    # streaming message means that process died (see agents.sweeper).
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Set by a cancel that may come from another server process; the running
    # turn reads it with its heartbeat.
    cancel_requested = models.BooleanField(default=False)
    # Channel-layer name of the process running this message's turn, where a
    # cancel made in another process is sent (see agents.inbox).
    runner = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["thread_id", "seq"]
        constraints = [
            # Idempotent writes: a retried turn_id finds its row instead of
            # inserting a second user or assistant message.
            models.UniqueConstraint(
                fields=["thread", "turn_id", "role"],
                condition=~Q(turn_id=""),
                name="chat_message_unique_turn_role",
            ),
            # Gap-free, duplicate-free numbering even if a writer bypasses last_seq.
            models.UniqueConstraint(fields=["thread", "seq"], name="chat_message_unique_seq"),
        ]
        indexes = [
            # The sweeper's scan for streaming messages with a stale heartbeat.
            models.Index(
                fields=["heartbeat_at"],
                condition=Q(status="streaming"),
                name="chat_message_streaming_hb",
            ),
            # The recovery of lost turn starts (agents.recovery): recent user messages.
            models.Index(fields=["created_at"], condition=Q(role="user"), name="chat_message_user_created"),
            # Live turns (chat.reports.live_turns): every running turn, oldest first.
            models.Index(
                fields=["created_at"],
                condition=Q(status="streaming"),
                name="chat_message_streaming_start",
            ),
            # Live turns: assistant messages that finished in the last minutes, newest
            # first (role = 'assistant' AND updated_at >= ... ORDER BY updated_at DESC).
            # Partial, so a streaming message is not in it. (Appends leave
            # updated_at and heartbeat_at alone within a heartbeat, so that
            # PostgreSQL can make them HOT updates: chat.turns._BEATS.)
            models.Index(
                fields=["role", "-updated_at"],
                condition=~Q(status="streaming"),
                name="chat_message_role_updated",
            ),
            # The admin's message list filtered by status, newest first, and its count.
            models.Index(fields=["status", "-id"], name="chat_message_status"),
            # The admin's message list filtered by creation date.
            models.Index(fields=["created_at"], name="chat_message_created"),
        ]

    def __str__(self) -> str:
        return f"{self.role} #{self.seq} ({self.status})"


class MessageChunk(models.Model):
    """A piece of a streaming message's text, appended in O(1).

    Rewriting a growing text column per delta costs O(length); inserting a
    piece does not. `finalize_assistant_turn` folds the pieces into
    `Message.content` and deletes them.
    """

    # No index of its own: chat_chunk_unique_start (message, start) serves every
    # lookup by message, and one index fewer is one write fewer per append.
    # No foreign key in the database either: on PostgreSQL its check (a row
    # lock on the message, per piece, at each commit) grew from 2 us to 120 us
    # a piece as the streaming rows' versions piled up between vacuums, up
    # to 3 s of a 442-stream step (bench/README.md). A piece is stored only
    # in the transaction that grew its message, row locked
    # (chat.turns.append_contents), and chat.threads.delete_thread locks
    # the streaming messages before it deletes: no piece outlives its message.
    message = models.ForeignKey(
        Message, on_delete=models.CASCADE, related_name="chunks", db_index=False, db_constraint=False
    )
    # Code-point offset of this piece in the full text.
    start = models.PositiveIntegerField()
    text = models.TextField()

    class Meta:
        ordering = ["start"]  # the text's order, for every reader
        constraints = [
            # Reading a message's pieces in order; two pieces never share a start.
            models.UniqueConstraint(fields=["message", "start"], name="chat_chunk_unique_start"),
        ]


class AgentAction(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        SUCCESS = "success"
        ERROR = "error"

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="actions")
    # The model's id for this tool call, unique within the message.
    call_id = models.CharField(max_length=128)
    tool = models.CharField(max_length=100)
    input = models.JSONField(default=dict, blank=True)
    output = models.JSONField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    # Length of the message's text when the call started, so a page can show
    # the call between the text before and after it.
    position = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["message_id", "id"]
        constraints = [
            # Idempotent start_action: a retried call_id finds its row.
            models.UniqueConstraint(fields=["message", "call_id"], name="chat_action_unique_call"),
        ]
        indexes = [
            # The admin's tool call list filtered by status, newest first, and its count.
            models.Index(fields=["status", "-id"], name="chat_action_status"),
            # The admin's tool call list filtered by tool, newest first, and its count.
            models.Index(fields=["tool", "-id"], name="chat_action_tool"),
            # The admin's tool call list filtered by start date.
            models.Index(fields=["started_at"], name="chat_action_started"),
        ]

    def __str__(self) -> str:
        return f"{self.tool} ({self.status})"


class TokenUsage(models.Model):
    # Null for usage not tied to one message (kept when the message is deleted).
    message = models.ForeignKey(Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="usage_records")
    thread = models.ForeignKey(Thread, null=True, blank=True, on_delete=models.SET_NULL, related_name="usage")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="token_usage")
    # What the tokens were spent on: "turn" for an assistant answer.
    usage_type = models.CharField(max_length=32, default="turn")
    # The model, or the first model when one turn used several.
    model = models.CharField(max_length=100, blank=True, default="")
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    total_tokens = models.PositiveIntegerField(default=0)
    # Cost in millionths of a dollar, from settings.MODEL_PRICES.
    cost_micros = models.PositiveBigIntegerField(default=0)
    # The provider reported nothing (a stopped turn): the counts are estimated from the text.
    estimated = models.BooleanField(default=False)
    # {"model": {"prompt_tokens", "completion_tokens", "total_tokens", "cost_micros", "calls"}}
    model_breakdown = models.JSONField(default=dict, blank=True)
    # One entry per model call: model, tokens, cost.
    call_details = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # Usage once per assistant message, whatever finalizes it twice.
            models.UniqueConstraint(
                fields=["message"],
                condition=Q(message__isnull=False),
                name="chat_usage_unique_message",
            ),
        ]
        indexes = [
            # The usage page: totals per day over a range; the usage list, newest first.
            models.Index(fields=["created_at"], name="chat_usage_created"),
            # The usage list filtered by model, newest first, and its count.
            models.Index(fields=["model", "-created_at"], name="chat_usage_model"),
            # The usage list filtered by usage type, newest first, and its count.
            models.Index(fields=["usage_type", "-created_at"], name="chat_usage_type"),
        ]

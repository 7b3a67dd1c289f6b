"""Reads of threads and messages in the JSON shapes of docs/protocol.md.

Every read of a streaming message assembles its text from `content` and its
pieces (see MessageChunk), so the API, the snapshot and the admin all see the
full text committed so far.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime, timedelta
from typing import NamedTuple

from django.contrib.auth.models import AnonymousUser, User
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Prefetch, QuerySet
from django.utils import timezone

from .models import Agent, AgentAction, Message, MessageChunk, Thread, TokenUsage

SNAPSHOT_MESSAGES = 50


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def default_agent_id() -> int | None:
    return Agent.objects.filter(is_default=True).values_list("pk", flat=True).first()


_LOOK_UP = -1  # thread_dict's default_agent when the caller has not read it


def thread_dict(thread: Thread, default_agent: int | None = _LOOK_UP) -> dict:
    """A thread object; a thread without an agent (its agent was deleted) shows the default one.

    A caller listing many threads reads the default agent once and passes it
    (None when there is none yet).
    """
    agent = thread.agent_id
    if agent is None:
        agent = default_agent_id() if default_agent == _LOOK_UP else default_agent
    return {
        "id": thread.pk,
        "title": thread.title,
        "agent": agent,
        "system_prompt": thread.system_prompt,
        "created_at": _iso(thread.created_at),
        "updated_at": _iso(thread.updated_at),
    }


# --- the message tree ----------------------------------------------------------


class Tree:
    """A thread's messages as parent links, read in one query, in seq (creation) order."""

    def __init__(self, thread_id: int) -> None:
        rows = Message.objects.filter(thread_id=thread_id).order_by("seq").values_list("pk", "parent_id")
        self.parents: dict[int, int | None] = dict(rows)
        self.children: dict[int | None, list[int]] = defaultdict(list)
        for message_id, parent_id in self.parents.items():
            self.children[parent_id].append(message_id)

    def versions(self, message_id: int) -> list[int]:
        """The ids of the messages sharing this one's parent, itself included, oldest first."""
        return list(self.children[self.parents.get(message_id)])

    def path_to(self, leaf: int | None) -> list[int]:
        """The ids from the first message down to `leaf`, in order."""
        path: list[int] = []
        while leaf is not None and leaf in self.parents and leaf not in path:
            path.append(leaf)
            leaf = self.parents[leaf]
        path.reverse()
        return path

    def newest_leaf_below(self, message_id: int) -> int:
        """The leaf reached from `message_id` by taking the newest child at each step."""
        while self.children.get(message_id):
            message_id = self.children[message_id][-1]
        return message_id

    def active_path(self, active_leaf: int | None) -> list[int]:
        """The active path; a thread without a leaf (never the case once it has messages) ends at its newest one."""
        if active_leaf not in self.parents:
            active_leaf = next(reversed(self.parents), None)
        return self.path_to(active_leaf)


def _active_leaf(thread_id: int) -> int | None:
    return Thread.objects.filter(pk=thread_id).values_list("active_leaf_id", flat=True).first()


def _path_messages(thread_id: int, limit: int | None = None, tree: Tree | None = None) -> tuple[list[Message], Tree]:
    """The messages of the active path (the last `limit` of them), in order, with the tree. Call in a transaction."""
    tree = tree if tree is not None else Tree(thread_id)
    path = tree.active_path(_active_leaf(thread_id))
    if limit is not None:
        path = path[-limit:]
    return list(_message_queryset().filter(pk__in=path).order_by("seq")), tree


def is_message_of(thread_id: int, message_id: int) -> bool:
    return Message.objects.filter(pk=message_id, thread_id=thread_id).exists()


def answered_message(thread_id: int, message_id: int, finished: bool = False) -> Message | None:
    """An assistant message of the thread (only a finished one when `finished`), or None."""
    found = Message.objects.filter(pk=message_id, thread_id=thread_id, role=Message.Role.ASSISTANT)
    if finished:
        found = found.exclude(status=Message.Status.STREAMING)
    return found.first()


def turn_exists(thread_id: int, turn_id: str) -> bool:
    """Whether any message of the thread (user or assistant) belongs to this turn_id."""
    return Message.objects.filter(thread_id=thread_id, turn_id=turn_id).exists()


def duration_ms(action: AgentAction) -> int | None:
    """How long a tool call ran, in milliseconds; None while it runs."""
    if not (action.finished_at and action.started_at):
        return None
    return int((action.finished_at - action.started_at).total_seconds() * 1000)


def action_dict(action: AgentAction) -> dict:
    return {
        "id": action.pk,
        "call_id": action.call_id,
        "tool": action.tool,
        "input": action.input,
        "output": action.output,
        "status": action.status,
        "position": action.position,
        "duration_ms": duration_ms(action),
        "started_at": _iso(action.started_at),
        "finished_at": _iso(action.finished_at),
    }


USAGE_FIELDS = ("model", "prompt_tokens", "completion_tokens", "total_tokens", "cost_micros")


def usage_dict(usage: TokenUsage | dict | None) -> dict | None:
    """The contract's usage object from a TokenUsage row or a usage dict; None stays None.

    An estimate (a stopped turn whose provider reported nothing) adds `"estimated": true`.
    """
    if not usage:
        return None
    if isinstance(usage, dict):
        shown = {key: usage[key] for key in USAGE_FIELDS}
        estimated = usage.get("estimated", False)
    else:
        shown = {key: getattr(usage, key) for key in USAGE_FIELDS}
        estimated = usage.estimated
    return {**shown, "estimated": True} if estimated else shown


def message_text(message: Message) -> str:
    """The full text of a message: content plus any streaming pieces (uses prefetched chunks).

    The row and its pieces come from two queries, and under READ COMMITTED a
    finalize can commit between them: the pieces are then gone, folded into
    the row's content. Appends only add pieces, so text shorter than the
    row's `content_length` means exactly that, and the row is read again.
    """
    if message.status != Message.Status.STREAMING:
        return message.content
    text = message.content + "".join(chunk.text for chunk in message.chunks.all())
    if len(text) < message.content_length:
        final = Message.objects.filter(pk=message.pk).values_list("content", flat=True).first()
        return text if final is None else final
    return text


def message_dict(message: Message, tree: Tree | None = None, bare: bool = False) -> dict:
    """A message object of the contract; expects `_message_queryset`'s prefetches (reads siblings without `tree`).

    `bare`: a message known to have no tool calls, pieces or usage (a user
    message), for which nothing more is read.
    """
    usage: list[TokenUsage] = [] if bare else list(message.usage_records.all())
    if tree is not None:
        versions = tree.versions(message.pk)
    else:
        versions = list(
            Message.objects.filter(thread_id=message.thread_id, parent_id=message.parent_id)
            .order_by("seq")
            .values_list("pk", flat=True)
        )
    return {
        "id": message.pk,
        "seq": message.seq,
        "parent_id": message.parent_id,
        "versions": versions,
        "role": message.role,
        "turn_id": message.turn_id,
        "status": message.status,
        "content": message_text(message),
        "metadata": message.metadata,
        "actions": [] if bare else [action_dict(a) for a in message.actions.all()],
        "usage": usage_dict(usage[0]) if usage else None,
        "created_at": _iso(message.created_at),
        "updated_at": _iso(message.updated_at),
    }


def _message_queryset() -> QuerySet[Message]:
    return Message.objects.prefetch_related(
        Prefetch("actions", queryset=AgentAction.objects.order_by("id")),
        Prefetch("chunks", queryset=MessageChunk.objects.order_by("start")),
        "usage_records",
    )


def own_thread(user: User | AnonymousUser, thread_id: int) -> Thread | None:
    """The thread if it exists and belongs to `user`; None otherwise (the caller answers 404)."""
    if not isinstance(user, User) or not user.is_authenticated:
        return None
    return Thread.objects.filter(pk=thread_id, owner=user).first()


def owns_thread(owner_id: int, thread_id: int) -> bool:
    """Whether thread `thread_id` exists and belongs to the user with id `owner_id`.

    Hand-written: every socket asks it as it opens, and the ORM's query
    building had cost ten times the query itself. An id no column can hold
    (a URL may carry any digits) belongs to nobody.
    """
    if not 0 < thread_id < 2**63:
        return False
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT 1 FROM {Thread._meta.db_table} WHERE id = %s AND owner_id = %s", [thread_id, owner_id])
        return cursor.fetchone() is not None


def list_threads(user: User) -> list[dict]:
    default = default_agent_id()
    return [thread_dict(t, default) for t in Thread.objects.filter(owner=user).order_by("-updated_at", "-id")]


def thread_detail(thread: Thread) -> dict:
    """The thread with the messages of its active path in order, read in one transaction."""
    with transaction.atomic():
        messages, tree = _path_messages(thread.pk)
    return {**thread_dict(thread), "messages": [message_dict(m, tree) for m in messages]}


EXPORT_FORMAT, EXPORT_VERSION = "chat-export", 1


def thread_export(thread: Thread) -> dict:
    """The JSON export: the thread and every message of every branch in seq order, read in one transaction."""
    with transaction.atomic():
        messages = list(_message_queryset().filter(thread_id=thread.pk).order_by("seq"))
        tree = Tree(thread.pk)
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "thread": {
            "title": thread.title,
            "system_prompt": thread.system_prompt,
            "created_at": _iso(thread.created_at),
            "updated_at": _iso(thread.updated_at),
        },
        "messages": [message_dict(m, tree) for m in messages],
    }


def thread_snapshot(thread_id: int, limit: int = SNAPSHOT_MESSAGES) -> dict:
    """The `snapshot` frame: the latest messages of the active path and the running turn, read in one transaction."""
    with transaction.atomic():
        tree = Tree(thread_id)
        if not tree.parents:  # a new thread: nothing more to read
            return {"type": "snapshot", "thread_id": thread_id, "messages": [], "active_turn": None}
        messages, tree = _path_messages(thread_id, limit, tree)
        active = (
            Message.objects.filter(thread_id=thread_id, role=Message.Role.ASSISTANT, status=Message.Status.STREAMING)
            .order_by("-seq")
            .values("pk", "turn_id")
            .first()
        )
    return {
        "type": "snapshot",
        "thread_id": thread_id,
        "messages": [message_dict(m, tree) for m in messages],
        "active_turn": {"turn_id": active["turn_id"], "message_id": active["pk"]} if active else None,
    }


def message_tail(message_id: int, start: int) -> tuple[str, str] | None:
    """The text of a message from code point `start` on, and its status; None if it is gone."""
    with transaction.atomic():
        message = _message_queryset().filter(pk=message_id).first()
        if message is None:
            return None
        return message_text(message)[start:], message.status


def has_live_turn(thread_id: int, beat_within: float) -> bool:
    """Whether a streaming assistant message of the thread has a heartbeat newer than `beat_within` seconds."""
    since = timezone.now() - timedelta(seconds=beat_within)
    return Message.objects.filter(
        thread_id=thread_id, role=Message.Role.ASSISTANT, status=Message.Status.STREAMING, heartbeat_at__gte=since
    ).exists()


def user_message_dict(message_id: int) -> dict | None:
    """A user message as the contract's object: it has no tool calls, pieces or usage, so none is read."""
    message = Message.objects.filter(pk=message_id, role=Message.Role.USER).first()
    return message_dict(message, bare=True) if message else None


HISTORY_MESSAGES = 200

# The ancestors of each given message: parent links walked in SQL (SQLite and PostgreSQL alike).
_ANCESTORS = """
WITH RECURSIVE path(root, id, depth) AS (
    SELECT id, parent_id, 1 FROM chat_message WHERE id IN ({marks})
    UNION ALL
    SELECT path.root, m.parent_id, path.depth + 1 FROM chat_message m JOIN path ON m.id = path.id
    WHERE path.depth < %s
)
SELECT path.root, m.id, m.role, m.content, m.status FROM path JOIN chat_message m ON m.id = path.id
ORDER BY path.root, m.seq
"""


def history_entries(thread_id: int, before_message_id: int, limit: int = HISTORY_MESSAGES) -> list[dict]:
    """The latest ancestors of a message (the path it answers, no other branch), oldest first, for a model."""
    return histories([before_message_id], limit)[before_message_id]


def histories(message_ids: list[int], limit: int = HISTORY_MESSAGES) -> dict[int, list[dict]]:
    """history_entries() of each message, in three statements however many there are.

    Read in hand-written SQL, as turns start: each path by its parent links,
    the text of a message still streaming (rare) with its pieces, and tool
    calls only when an answer is there.
    """
    found: dict[int, list[dict]] = {message_id: [] for message_id in message_ids}
    if not message_ids:
        return found
    with connection.cursor() as cursor:
        cursor.execute(_ANCESTORS.format(marks=", ".join(["%s"] * len(message_ids))), [*message_ids, limit])
        rows = cursor.fetchall()
        streaming = {pk for _, pk, _, _, status in rows if status == Message.Status.STREAMING}
        texts = {m.pk: message_text(m) for m in _message_queryset().filter(pk__in=streaming)} if streaming else {}
        answers = sorted({pk for _, pk, role, _, _ in rows if role == Message.Role.ASSISTANT})
        actions: dict[int, list[dict]] = defaultdict(list)
        if answers:
            cursor.execute(
                "SELECT message_id, call_id, tool, input, output, status FROM chat_agentaction"
                f" WHERE message_id IN ({', '.join(['%s'] * len(answers))}) ORDER BY id",
                answers,
            )
            for message_id, call_id, tool, tool_input, output, status in cursor.fetchall():
                actions[message_id].append(
                    {
                        "call_id": call_id,
                        "tool": tool,
                        "input": _json(tool_input),
                        "output": _json(output),
                        "status": status,
                    }
                )
    for root, pk, role, content, _ in rows:
        found[root].append({"role": role, "content": texts.get(pk, content), "actions": actions[pk]})
    return found


def _json(value: object) -> object:
    """A JSON column read by hand-written SQL: text on both backends (Django loads jsonb as text)."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def sibling_ids(thread_id: int, parent_id: int | None) -> list[int]:
    """The ids of the thread's messages that follow `parent_id` (its versions), oldest first."""
    parent = "parent_id IS NULL" if parent_id is None else "parent_id = %s"
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id FROM chat_message WHERE thread_id = %s AND {parent} ORDER BY seq",
            [thread_id] if parent_id is None else [thread_id, parent_id],
        )
        return [row[0] for row in cursor.fetchall()]


class TurnFacts(NamedTuple):
    """What the check step of a new user message needs, read in one database hop."""

    stored_user_message: dict | None  # the turn_id's user message, when the turn_id was used before
    turn_exists: bool  # the turn_id names any message of the thread (a regenerate's has no user message)
    live_elsewhere: int  # the owner's turns running in other threads


def turn_facts(owner_id: int, thread_id: int, turn_id: str | None, beat_within: float) -> TurnFacts:
    """The turn_id's stored user message and whether it exists, and live_turns_elsewhere(), in one database hop."""
    stored, exists = None, False
    if turn_id:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT role, id FROM chat_message WHERE thread_id = %s AND turn_id = %s", [thread_id, turn_id]
            )
            roles = dict(cursor.fetchall())
        exists = bool(roles)
        if Message.Role.USER in roles:
            stored = user_message_dict(roles[Message.Role.USER])
    return TurnFacts(stored, exists, live_turns_elsewhere(owner_id, thread_id, beat_within))


def turn_facts_many(asked: list[tuple[int, int, str | None]], beat_within: float) -> list[TurnFacts]:
    """turn_facts() for many (owner, thread, turn_id) at once, in two statements (and a read per repeated turn_id).

    A burst of messages from users who run many turns counted each one's
    running turns again: 442 counts held a web process's database thread
    for 150 ms on PostgreSQL.
    """
    threads = sorted({thread_id for _, thread_id, _ in asked})
    turn_ids = sorted({turn_id for _, _, turn_id in asked if turn_id})
    roles: dict[tuple[int, str], dict[str, int]] = {}
    with connection.cursor() as cursor:
        if turn_ids:
            cursor.execute(
                f"SELECT thread_id, turn_id, role, id FROM chat_message WHERE thread_id IN ({_marks(threads)})"
                f" AND turn_id IN ({_marks(turn_ids)})",
                [*threads, *turn_ids],
            )
            for thread_id, turn_id, role, message_id in cursor.fetchall():
                roles.setdefault((thread_id, turn_id), {})[role] = message_id
        owners = sorted({owner_id for owner_id, _, _ in asked})
        since = connection.ops.adapt_datetimefield_value(timezone.now() - timedelta(seconds=beat_within))
        cursor.execute(
            "SELECT t.owner_id, m.thread_id, COUNT(*) FROM chat_message m JOIN chat_thread t ON t.id = m.thread_id"
            " WHERE m.status = 'streaming' AND m.heartbeat_at >= %s AND m.role = 'assistant'"
            f" AND t.owner_id IN ({_marks(owners)}) GROUP BY t.owner_id, m.thread_id",
            [since, *owners],
        )
        live: dict[int, dict[int, int]] = {}
        for owner_id, thread_id, count in cursor.fetchall():
            live.setdefault(owner_id, {})[thread_id] = count
    facts = []
    for owner_id, thread_id, turn_id in asked:
        found = roles.get((thread_id, turn_id), {}) if turn_id else {}
        stored = user_message_dict(found[Message.Role.USER]) if Message.Role.USER in found else None
        running = live.get(owner_id, {})
        facts.append(TurnFacts(stored, bool(found), sum(running.values()) - running.get(thread_id, 0)))
    return facts


def _marks(values: list) -> str:
    return ", ".join(["%s"] * len(values))


def live_turns_elsewhere(owner_id: int, thread_id: int, beat_within: float) -> int:
    """How many turns of the owner's other threads are running (heartbeat newer than `beat_within` seconds).

    The thread's own running turn is not counted: a new message cancels it.
    Hand-written SQL over the partial index of streaming messages: it runs
    for every message a user sends.
    """
    since = connection.ops.adapt_datetimefield_value(timezone.now() - timedelta(seconds=beat_within))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COUNT(*) FROM chat_message m JOIN chat_thread t ON t.id = m.thread_id"
            " WHERE m.status = 'streaming' AND m.heartbeat_at >= %s AND m.role = 'assistant'"
            " AND t.owner_id = %s AND m.thread_id <> %s",
            [since, owner_id, thread_id],
        )
        return cursor.fetchone()[0]


def database_answers() -> bool:
    """Run `SELECT 1` (the health check): raises when the database is unreachable."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        return cursor.fetchone() == (1,)


class UnstartedTurn(NamedTuple):
    thread_id: int
    turn_id: str
    message_id: int  # the user message its answer follows
    age: float  # seconds since the user message was stored
    latest: bool  # no newer user message in its thread


def unstarted_turns(older_than: float, newer_than: float) -> list[UnstartedTurn]:
    """User messages stored between `newer_than` and `older_than` seconds ago whose turn has no assistant message.

    Served by chat_message_user_created (created_at of user messages).
    """
    now = timezone.now()
    answered = Message.objects.filter(
        thread_id=OuterRef("thread_id"), turn_id=OuterRef("turn_id"), role=Message.Role.ASSISTANT
    )
    newer = Message.objects.filter(thread_id=OuterRef("thread_id"), role=Message.Role.USER, seq__gt=OuterRef("seq"))
    rows = (
        Message.objects.filter(
            role=Message.Role.USER,
            created_at__lte=now - timedelta(seconds=older_than),
            created_at__gte=now - timedelta(seconds=newer_than),
        )
        .exclude(turn_id="")
        .filter(~Exists(answered))
        .annotate(superseded=Exists(newer))
        .values_list("thread_id", "turn_id", "pk", "created_at", "superseded")
    )
    return [UnstartedTurn(t, turn, pk, (now - at).total_seconds(), not sup) for t, turn, pk, at, sup in rows]

"""Search of a user's messages with the database's own full-text engine (PROTOCOL.md "Search").

Finished messages are found through the index that migration
0008_message_search builds: PostgreSQL's GIN index on
to_tsvector('simple', content), SQLite's FTS5 table (unicode61, diacritics
kept). Both match whole words, case-insensitively, without stemming or stop
words. Streaming messages are not in the index (appends stay cheap); their
text so far is read from their pieces and matched here, and they are few.
"""

from __future__ import annotations

import re
from typing import Any

from django.db import connection

from .models import Message
from .selectors import _iso, _message_queryset, message_text

MAX_RESULTS = 50
SNIPPET_CHARS = 280
SNIPPET_BEFORE = 80
# What both engines call a word: letters and digits (the underscore separates words in both).
_WORD = re.compile(r"[^\W_]+")


def query_words(text: str) -> list[str]:
    """The distinct words of a query, lower-cased, in order."""
    return list(dict.fromkeys(word.casefold() for word in _WORD.findall(text)))


def search_messages(user: Any, text: str) -> list[dict]:
    """The user's messages containing every word of `text`, best first, at most MAX_RESULTS."""
    words = query_words(text)
    if not words:
        return []
    found = _streaming_matches(user, words) + _indexed_matches(user.pk, words)
    ids = list(dict.fromkeys(found))[:MAX_RESULTS]
    messages = {m.pk: m for m in _message_queryset().select_related("thread").filter(pk__in=ids)}
    return [_result(messages[i], words) for i in ids if i in messages]


def _indexed_matches(owner_id: int, words: list[str]) -> list[int]:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            query = " & ".join(f"'{word}'" for word in words)
            cursor.execute(
                "SELECT m.id FROM chat_message m JOIN chat_thread t ON t.id = m.thread_id,"
                " to_tsquery('simple'::regconfig, %s) q"
                " WHERE t.owner_id = %s AND m.status <> 'streaming'"
                " AND to_tsvector('simple'::regconfig, m.content) @@ q"
                " ORDER BY ts_rank(to_tsvector('simple'::regconfig, m.content), q) DESC, m.id DESC LIMIT %s",
                [query, owner_id, MAX_RESULTS],
            )
        elif connection.vendor == "sqlite":
            query = " ".join(f'"{word}"' for word in words)
            cursor.execute(
                "SELECT m.id FROM chat_message_fts f JOIN chat_message m ON m.id = f.rowid"
                " JOIN chat_thread t ON t.id = m.thread_id"
                " WHERE chat_message_fts MATCH %s AND t.owner_id = %s"
                " ORDER BY bm25(chat_message_fts), m.id DESC LIMIT %s",
                [query, owner_id, MAX_RESULTS],
            )
        else:
            raise NotImplementedError(f"no full-text search for {connection.vendor}")
        return [row[0] for row in cursor.fetchall()]


def _pattern(word: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![^\W_]){re.escape(word)}(?![^\W_])", re.IGNORECASE)


def _streaming_matches(user: Any, words: list[str]) -> list[int]:
    """Streaming messages of the user whose text so far holds every word (read from their pieces)."""
    patterns = [_pattern(word) for word in words]
    streaming = _message_queryset().filter(thread__owner=user, status=Message.Status.STREAMING).order_by("-id")
    return [m.pk for m in streaming if all(p.search(message_text(m)) for p in patterns)]


def snippet(text: str, words: list[str]) -> str:
    """An excerpt of under 300 characters around the first match of any of the words."""
    starts = [m.start() for m in (_pattern(word).search(text) for word in words) if m]
    first = min(starts, default=0)
    begin = max(0, first - SNIPPET_BEFORE)
    if begin:
        space = text.find(" ", begin, first)
        begin = space + 1 if space != -1 else begin
    end = min(len(text), begin + SNIPPET_CHARS)
    excerpt = " ".join(text[begin:end].split())
    return ("…" if begin else "") + excerpt + ("…" if end < len(text) else "")


def _result(message: Message, words: list[str]) -> dict:
    return {
        "thread_id": message.thread_id,
        "thread_title": message.thread.title,
        "message_id": message.pk,
        "role": message.role,
        "snippet": snippet(message_text(message), words),
        "created_at": _iso(message.created_at),
    }

"""The schema the migrations build: partial unique indexes, constraints, foreign keys, cascades."""

import re

from django.db import IntegrityError, connection, transaction

from chat import turns
from chat.models import AgentAction, Message, MessageChunk, Thread, TokenUsage
from tests.base import ChatTestCase, ChatTransactionTestCase
from tests.services import wait_until


def index_definitions() -> dict[str, str]:
    """Every index and unique constraint of the chat tables, by name, as the database reports its DDL.

    SQLite: `sqlite_master` (indexes, and table-level constraints inside
    CREATE TABLE); PostgreSQL: `pg_indexes`. Normalized to lower case with
    quotes, parentheses and `::text` casts removed, so both read alike.
    """
    definitions = {}
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT type, name, sql FROM sqlite_master WHERE tbl_name LIKE 'chat_%' AND sql IS NOT NULL")
            for kind, name, sql in cursor.fetchall():
                if kind == "index":
                    definitions[name] = sql
                for constraint, columns in re.findall(
                    r'CONSTRAINT "(\w+)" UNIQUE \(([^)]*)\)', sql if kind == "table" else ""
                ):
                    definitions[constraint] = f"CREATE UNIQUE INDEX {constraint} ON {name} ({columns})"
        elif connection.vendor == "postgresql":
            cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename LIKE 'chat_%'")
            definitions = dict(cursor.fetchall())
        else:
            raise AssertionError(f"no schema reader for {connection.vendor}")
    return {name: _normalize(sql) for name, sql in definitions.items()}


def _normalize(sql: str) -> str:
    sql = sql.lower().replace("::text", "").replace('"', "")
    sql = re.sub(r"[()]", " ", sql)
    return re.sub(r"\s+", " ", sql).strip()


class SchemaTests(ChatTestCase):
    def setUp(self) -> None:
        self.indexes = index_definitions()

    def assert_index(self, name: str, pattern: str) -> None:
        self.assertIn(name, self.indexes, f"index {name} is missing from the schema")
        self.assertRegex(self.indexes[name], pattern)

    def test_turn_role_index_is_partial_unique(self) -> None:
        """chat_message_unique_turn_role is a unique index on (thread, turn_id, role) where turn_id is not empty."""
        self.assert_index(
            "chat_message_unique_turn_role",
            r"^create unique index .*chat_message .*thread_id, turn_id, role where not turn_id = ''$",
        )

    def test_usage_message_index_is_partial_unique(self) -> None:
        """chat_usage_unique_message is a unique index on message where message is not null."""
        self.assert_index(
            "chat_usage_unique_message",
            r"^create unique index .*chat_tokenusage .*message_id where message_id is not null$",
        )

    def test_thread_seq_is_unique(self) -> None:
        """(thread, seq) carries a unique constraint without condition."""
        self.assert_index("chat_message_unique_seq", r"^create unique index .*chat_message .*thread_id, seq$")

    def test_action_call_id_is_unique_per_message(self) -> None:
        """(message, call_id) carries a unique constraint without condition."""
        self.assert_index("chat_action_unique_call", r"^create unique index .*chat_agentaction .*message_id, call_id$")

    def test_sqlite_enforces_foreign_keys(self) -> None:
        """On SQLite the connection runs with PRAGMA foreign_keys on."""
        if connection.vendor != "sqlite":
            self.skipTest("SQLite only")
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA foreign_keys")
            self.assertEqual(cursor.fetchone()[0], 1)


class ConstraintBehaviourTests(ChatTestCase):
    def setUp(self) -> None:
        self.user = self.make_user("alice")
        self.thread = self.make_thread(self.user)

    def test_duplicate_seq_is_refused(self) -> None:
        """A second message with a seq already used in the thread raises IntegrityError."""
        Message.objects.create(thread=self.thread, role="user", seq=1)
        with self.assertRaises(IntegrityError), transaction.atomic():
            Message.objects.create(thread=self.thread, role="assistant", seq=1)

    def test_duplicate_turn_role_is_refused(self) -> None:
        """A second user message with the same turn_id in the thread raises IntegrityError."""
        Message.objects.create(thread=self.thread, role="user", turn_id="t-1", seq=1)
        with self.assertRaises(IntegrityError), transaction.atomic():
            Message.objects.create(thread=self.thread, role="user", turn_id="t-1", seq=2)

    def test_empty_turn_ids_do_not_collide(self) -> None:
        """Messages without a turn_id (imported rows) are outside the partial unique index."""
        Message.objects.create(thread=self.thread, role="user", turn_id="", seq=1)
        Message.objects.create(thread=self.thread, role="user", turn_id="", seq=2)
        self.assertEqual(Message.objects.count(), 2)

    def test_usage_without_message_does_not_collide(self) -> None:
        """Usage rows without a message are outside the partial unique index; a second row for a message is refused."""
        TokenUsage.objects.create(user=self.user, usage_type="title")
        TokenUsage.objects.create(user=self.user, usage_type="title")
        message = Message.objects.create(thread=self.thread, role="assistant", turn_id="t-1", seq=1)
        TokenUsage.objects.create(user=self.user, message=message)
        with self.assertRaises(IntegrityError), transaction.atomic():
            TokenUsage.objects.create(user=self.user, message=message)

    def test_duplicate_call_id_is_refused(self) -> None:
        """A second action with the same call_id on one message raises IntegrityError."""
        message = Message.objects.create(thread=self.thread, role="assistant", turn_id="t-1", seq=1)
        AgentAction.objects.create(message=message, call_id="c1", tool="clock")
        with self.assertRaises(IntegrityError), transaction.atomic():
            AgentAction.objects.create(message=message, call_id="c1", tool="clock")


class ForeignKeyTests(ChatTransactionTestCase):
    def test_message_for_missing_thread_is_refused(self) -> None:
        """Inserting a message that points at no thread fails when it commits, on SQLite too."""
        with self.assertRaises(IntegrityError), transaction.atomic():
            Message.objects.create(thread_id=999_999, role="user", seq=1)
        self.assertFalse(Message.objects.exists())

    def test_raw_insert_for_missing_thread_is_refused(self) -> None:
        """The foreign key lives in the database: raw SQL cannot insert an orphan message either."""
        with self.assertRaises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO chat_message (thread_id, role, turn_id, seq, content, content_length, status, metadata,"
                " cancel_requested, created_at, updated_at)"
                " VALUES (999999, 'user', '', 1, '', 0, 'completed', '{}', %s, %s, %s)",
                [False, "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00+00:00"],
            )
        self.assertFalse(Message.objects.exists())


class PieceWithoutForeignKeyTests(ChatTransactionTestCase):
    """chat_messagechunk has no foreign key in the database (its check cost PostgreSQL up to 120 us a piece):
    the writes keep every piece tied to a message that exists."""

    def setUp(self) -> None:
        self.user = self.make_user("alice")
        self.thread = self.make_thread(self.user)
        turns.persist_user_turn(self.thread.pk, "t-1", "question")
        self.answer = turns.persist_assistant_shell(self.thread.pk, "t-1").id

    def test_a_piece_for_a_message_that_is_gone_is_not_stored(self) -> None:
        """An append to a deleted message stores nothing, by itself or in a batch."""
        from chat import threads

        turns.append_content(self.answer, "kept until the thread goes ")
        threads.delete_thread(self.thread)
        self.assertEqual(turns.append_contents([(self.answer, "late", 27)]), [None])
        with self.assertRaises(turns.MessageClosed):
            turns.append_content(self.answer, "late", 27)
        self.assertFalse(MessageChunk.objects.exists())

    def test_deleting_a_thread_during_an_append_leaves_no_piece_on_postgresql(self) -> None:
        """The delete waits for the append that holds the message, then removes the piece it committed."""
        import threading
        import unittest

        from django.db import connections

        from chat import threads

        if connection.vendor != "postgresql":
            raise unittest.SkipTest("row locks: PostgreSQL (SQLite has one writer at a time)")
        appended, release = threading.Event(), threading.Event()

        def append_and_hold() -> None:
            try:
                with transaction.atomic():
                    turns.append_content(self.answer, "in flight", 0)
                    appended.set()
                    release.wait(30)
            finally:
                connections.close_all()

        def delete() -> None:
            try:
                threads.delete_thread(Thread.objects.get(pk=self.thread.pk))
            finally:
                connections.close_all()

        writer = threading.Thread(target=append_and_hold)
        writer.start()
        self.assertTrue(appended.wait(30))
        deleter = threading.Thread(target=delete)
        deleter.start()

        def delete_waits_for_a_lock() -> bool:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
                return cursor.fetchone()[0] > 0

        wait_until(delete_waits_for_a_lock, 30, "the delete waiting for the append's row lock")
        self.assertTrue(deleter.is_alive(), "the delete waits for the append in flight")
        release.set()
        writer.join(30)
        deleter.join(30)
        self.assertFalse(Thread.objects.filter(pk=self.thread.pk).exists())
        self.assertFalse(MessageChunk.objects.exists(), "no piece outlives its message")


class LifecycleTests(ChatTestCase):
    def setUp(self) -> None:
        self.user = self.make_user("alice")
        self.thread = self.make_thread(self.user)

    def make_turn(self, turn_id: str) -> int:
        """A full turn: user message, streamed answer with pieces, one finished and one pending tool call."""
        turns.persist_user_turn(self.thread.pk, turn_id, "question")
        message_id = turns.persist_assistant_shell(self.thread.pk, turn_id).id
        turns.append_content(message_id, "first part ")
        done = turns.start_action(message_id, f"{turn_id}-a", "calculator", {"expression": "1+1"}).id
        turns.finish_action(done, "success", {"result": 2})
        turns.append_content(message_id, "second part")
        turns.start_action(message_id, f"{turn_id}-b", "clock", {})
        return message_id

    def test_status_changes_keep_every_message_and_action(self) -> None:
        """Finalizing turns with every final status removes no message, action or text."""
        message_ids = {
            status: self.make_turn(f"t-{status}") for status in ("completed", "cancelled", "failed", "interrupted")
        }
        for status, message_id in message_ids.items():
            turns.finalize_assistant_turn(message_id, status, usage={"model": "local", "total_tokens": 4})
        self.assertEqual(Message.objects.filter(thread=self.thread).count(), 8)
        self.assertEqual(AgentAction.objects.filter(message__thread=self.thread).count(), 8)
        for status, message_id in message_ids.items():
            message = Message.objects.get(pk=message_id)
            self.assertEqual((message.status, message.content), (status, "first part second part"))
            self.assertEqual(message.actions.count(), 2)
        self.assertEqual(sorted(Message.objects.values_list("seq", flat=True)), list(range(1, 9)))

    def test_deleting_a_thread_cascades(self) -> None:
        """Deleting a thread deletes its messages, pieces and actions; usage rows stay, detached."""
        message_id = self.make_turn("t-1")
        turns.finalize_assistant_turn(message_id, "completed", usage={"model": "local", "total_tokens": 4})
        streaming_id = self.make_turn("t-2")
        self.assertTrue(MessageChunk.objects.filter(message_id=streaming_id).exists())
        other = self.make_thread(self.user, "kept")
        turns.persist_user_turn(other.pk, "t-1", "stays")

        self.thread.delete()

        self.assertFalse(Thread.objects.filter(pk=self.thread.pk).exists())
        self.assertEqual(list(Message.objects.values_list("thread_id", flat=True)), [other.pk])
        self.assertFalse(MessageChunk.objects.exists())
        self.assertFalse(AgentAction.objects.exists())
        usage = TokenUsage.objects.get()
        self.assertEqual((usage.message_id, usage.thread_id, usage.user_id), (None, None, self.user.pk))


class MigrationTests(ChatTestCase):
    def test_migrations_match_the_models(self) -> None:
        """Every model change has its migration: makemigrations finds nothing to write."""
        from io import StringIO

        from django.core.management import call_command

        out = StringIO()
        try:
            call_command("makemigrations", "--check", "--dry-run", stdout=out, stderr=out)
        except SystemExit:
            self.fail(f"models and migrations differ:\n{out.getvalue()}")

    def test_database_url_selects_the_database_the_tests_run_on(self) -> None:
        """With DATABASE_URL set to PostgreSQL (the pg leg) the tests really run on PostgreSQL."""
        import os

        url = os.environ.get("DATABASE_URL", "")
        expected = "postgresql" if url.startswith(("postgres://", "postgresql://")) else "sqlite"
        self.assertEqual(connection.vendor, expected)

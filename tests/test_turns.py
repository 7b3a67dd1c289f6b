"""Turn writes: user message, assistant shell, streamed content and tool calls (chat.turns)."""

from datetime import timedelta
from unittest import skipUnless

from django.conf import settings
from django.db import connection
from django.utils import timezone

from chat import endings, turns
from chat.models import AgentAction, Message, MessageChunk
from tests.base import ChatTestCase, ChatTransactionTestCase


class TurnTestCase(ChatTestCase):
    def setUp(self) -> None:
        self.user = self.make_user("alice")
        self.thread = self.make_thread(self.user)

    def shell(self, turn_id: str = "t-1") -> int:
        return turns.persist_assistant_shell(self.thread.pk, turn_id).id


class PersistUserTurnTests(TurnTestCase):
    def test_stores_the_user_message(self) -> None:
        """A new turn_id stores one completed user message with its text and length."""
        result = turns.persist_user_turn(self.thread.pk, "t-1", "héllo")
        self.assertTrue(result.created)
        message = Message.objects.get(pk=result.id)
        self.assertEqual(
            (message.role, message.turn_id, message.content, message.content_length, message.status, message.seq),
            ("user", "t-1", "héllo", 5, "completed", 1),
        )

    def test_same_turn_id_returns_the_first_id_and_stores_nothing(self) -> None:
        """The same turn_id again returns the first id, keeps the first text and takes no seq."""
        first = turns.persist_user_turn(self.thread.pk, "t-1", "first")
        again = turns.persist_user_turn(self.thread.pk, "t-1", "second")
        self.assertEqual(again.id, first.id)
        self.assertFalse(again.created)
        self.assertEqual(Message.objects.count(), 1)
        self.assertEqual(Message.objects.get(pk=first.id).content, "first")
        self.thread.refresh_from_db()
        self.assertEqual(self.thread.last_seq, 1)

    def test_same_turn_id_in_another_thread_is_another_turn(self) -> None:
        """turn_id is unique per thread: another thread's equal turn_id stores its own message."""
        other = self.make_thread(self.user, "other")
        first = turns.persist_user_turn(self.thread.pk, "t-1", "a")
        second = turns.persist_user_turn(other.pk, "t-1", "b")
        self.assertNotEqual(first.id, second.id)
        self.assertEqual(Message.objects.get(pk=second.id).seq, 1)

    def test_empty_turn_id_is_refused(self) -> None:
        """An empty turn_id raises ValueError and stores no row."""
        with self.assertRaises(ValueError):
            turns.persist_user_turn(self.thread.pk, "", "hello")
        self.assertFalse(Message.objects.exists())

    def test_missing_thread_is_refused(self) -> None:
        """A thread that does not exist raises ValueError and stores no row."""
        with self.assertRaises(ValueError):
            turns.persist_user_turn(self.thread.pk + 1000, "t-1", "hello")
        self.assertFalse(Message.objects.exists())

    def test_keeps_only_complete_mentioned_documents(self) -> None:
        """Mentioned documents are kept only with id, title and document_type, and only those fields."""
        documents = [
            {"id": 1, "title": "Spec", "document_type": "pdf", "extra": "dropped"},
            {"id": 2, "title": "No type"},
            {"title": "No id", "document_type": "doc"},
            {"id": None, "title": "Null id", "document_type": "doc"},
            "not a dict",
            {"id": 0, "title": "", "document_type": "md"},
        ]
        message_id = turns.persist_user_turn(self.thread.pk, "t-1", "see docs", documents).id
        self.assertEqual(
            Message.objects.get(pk=message_id).metadata["mentioned_documents"],
            [
                {"id": 1, "title": "Spec", "document_type": "pdf"},
                {"id": 0, "title": "", "document_type": "md"},  # present, though empty: kept
            ],
        )

    def test_user_message_has_the_contract_flags(self) -> None:
        """A user message's metadata says it is not streaming, not cancelled and has no error."""
        message_id = turns.persist_user_turn(self.thread.pk, "t-1", "hi").id
        metadata = Message.objects.get(pk=message_id).metadata
        self.assertEqual((metadata["streaming"], metadata["cancelled"], metadata["has_error"]), (False, False, False))

    def test_no_valid_mentioned_document_stores_none(self) -> None:
        """When no mentioned document is complete, the message has no mentioned_documents at all."""
        for turn_id, documents in (("t-1", [{"id": 1}]), ("t-2", []), ("t-3", None), ("t-4", "junk")):
            message_id = turns.persist_user_turn(self.thread.pk, turn_id, "text", documents).id
            self.assertNotIn("mentioned_documents", Message.objects.get(pk=message_id).metadata, turn_id)


class PersistAssistantShellTests(TurnTestCase):
    def test_creates_an_empty_streaming_message(self) -> None:
        """The shell is an empty assistant message with status streaming and metadata.streaming true."""
        turns.persist_user_turn(self.thread.pk, "t-1", "hi")
        message = Message.objects.get(pk=self.shell())
        self.assertEqual(
            (message.role, message.content, message.status, message.seq), ("assistant", "", "streaming", 2)
        )
        self.assertIs(message.metadata["streaming"], True)
        self.assertIsNotNone(message.heartbeat_at)

    def test_same_turn_id_returns_the_first_shell(self) -> None:
        """A second shell for the same turn returns the first id and stores nothing."""
        first = turns.persist_assistant_shell(self.thread.pk, "t-1")
        again = turns.persist_assistant_shell(self.thread.pk, "t-1")
        self.assertEqual(again.id, first.id)
        self.assertEqual((first.created, again.created), (True, False))
        self.assertEqual(Message.objects.filter(role="assistant").count(), 1)

    def test_user_and_assistant_share_a_turn_id(self) -> None:
        """The user message and the shell of one turn are two rows with the same turn_id."""
        user_id = turns.persist_user_turn(self.thread.pk, "t-1", "hi").id
        self.assertNotEqual(self.shell("t-1"), user_id)
        self.assertEqual(Message.objects.filter(turn_id="t-1").count(), 2)

    def test_empty_turn_id_is_refused_without_a_row(self) -> None:
        """An empty turn_id raises a clear ValueError and stores no message."""
        with self.assertRaisesMessage(ValueError, "turn_id"):
            turns.persist_assistant_shell(self.thread.pk, "")
        self.assertFalse(Message.objects.exists())
        self.thread.refresh_from_db()
        self.assertEqual(self.thread.last_seq, 0)


class AppendContentTests(TurnTestCase):
    def test_returns_the_new_length(self) -> None:
        """Each append returns the length of the text so far."""
        message_id = self.shell()
        self.assertEqual(turns.append_content(message_id, "Hello"), 5)
        self.assertEqual(turns.append_content(message_id, ", world"), 12)
        self.assertEqual(Message.objects.get(pk=message_id).content_length, 12)

    def test_full_text_is_content_and_pieces(self) -> None:
        """While streaming, content followed by the pieces in order is the full text."""
        message_id = self.shell()
        for delta in ("one ", "two ", "three"):
            turns.append_content(message_id, delta)
        self.assertEqual(self.full_text(message_id), "one two three")

    def test_lengths_count_code_points(self) -> None:
        """Lengths and piece offsets are counted in code points, with accents, CJK and emoji."""
        message_id = self.shell()
        deltas = ["héllo ", "日本語 ", "👋🏽", " ok"]
        lengths = [turns.append_content(message_id, delta) for delta in deltas]
        text = "".join(deltas)
        self.assertEqual(lengths, [6, 10, 12, 15])
        self.assertEqual(lengths[-1], len(text))
        self.assertEqual(self.full_text(message_id), text)
        starts = list(
            MessageChunk.objects.filter(message_id=message_id).order_by("start").values_list("start", flat=True)
        )
        self.assertEqual(starts, [0, 6, 10, 12])

    def test_empty_delta_changes_nothing(self) -> None:
        """An empty delta returns the current length and stores no piece."""
        message_id = self.shell()
        turns.append_content(message_id, "abc")
        self.assertEqual(turns.append_content(message_id, ""), 3)
        self.assertEqual(MessageChunk.objects.filter(message_id=message_id).count(), 1)

    def test_refused_after_finalize(self) -> None:
        """Appending to a finalized message raises MessageClosed and leaves its text unchanged."""
        message_id = self.shell()
        turns.append_content(message_id, "done")
        turns.finalize_assistant_turn(message_id, "completed")
        with self.assertRaises(turns.MessageClosed):
            turns.append_content(message_id, " more")
        message = Message.objects.get(pk=message_id)
        self.assertEqual((message.content, message.content_length), ("done", 4))
        self.assertFalse(MessageChunk.objects.filter(message_id=message_id).exists())

    def test_refused_for_a_missing_message(self) -> None:
        """Appending to a message that does not exist raises MessageClosed."""
        with self.assertRaises(turns.MessageClosed):
            turns.append_content(999_999, "x")

    def test_append_sql_does_not_grow_with_the_text(self) -> None:
        """An append never rewrites the text column: the same statements at 1 KB and at 100 KB."""
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        def append_statements(message_id: int) -> list[str]:
            with CaptureQueriesContext(connection) as queries:
                turns.append_content(message_id, "x" * 20)
            return [q["sql"] for q in queries.captured_queries]

        small, large = self.shell("small"), self.shell("large")
        turns.append_content(small, "a" * 1_000)
        for _ in range(10):
            turns.append_content(large, "b" * 10_000)
        statements = append_statements(small)
        self.assertEqual(len(statements), len(append_statements(large)))
        writes = [sql for sql in statements if sql.lstrip().upper().startswith(("UPDATE", "INSERT"))]
        self.assertEqual(len(writes), 2, statements)
        for sql in writes:
            # Only fixed-size columns of the message; the piece's text is the only text written.
            self.assertNotRegex(sql, r'"?content"?\s*=', sql)
            self.assertLess(len(sql), 600, "the statement must not carry the whole text")

    def test_append_contents_stores_every_message_in_one_transaction(self) -> None:
        """A batch appends each message at its offset; a message no longer streaming there gets None and no piece."""
        one, two, closed = self.shell("one"), self.shell("two"), self.shell("closed")
        turns.append_content(one, "a ")
        turns.finalize_assistant_turn(closed, "completed")
        lengths = turns.append_contents([(one, "b ", 2), (two, "x ", 0), (closed, "late ", 0)])
        self.assertEqual(lengths, [4, 2, None])
        self.assertEqual((self.full_text(one), self.full_text(two)), ("a b ", "x "))
        self.assertFalse(MessageChunk.objects.filter(message_id=closed).exists())

    @skipUnless(connection.vendor == "postgresql", "the one-statement append is PostgreSQL's")
    def test_append_contents_is_one_statement_on_postgresql(self) -> None:
        """A commit of many messages' pieces is one round trip, its own transaction: no BEGIN, no second statement."""
        from django.test.utils import CaptureQueriesContext

        one, two, three = self.shell("one"), self.shell("two"), self.shell("three")
        with CaptureQueriesContext(connection) as queries:
            lengths = turns.append_contents([(one, "a ", 0), (two, "", 0), (three, "ccc", 0)])
        self.assertEqual(lengths, [2, 0, 3])
        self.assertEqual(len(queries), 1, [q["sql"] for q in queries])
        self.assertEqual((self.full_text(one), self.full_text(two), self.full_text(three)), ("a ", "", "ccc"))
        self.assertEqual(MessageChunk.objects.filter(message_id=two).count(), 0)  # an empty piece stores no row

    def test_append_contents_retried_after_its_commit_adds_nothing(self) -> None:
        """The same batch sent again (its first commit's answer was lost) finds its pieces and stores none twice."""
        one, two = self.shell("one"), self.shell("two")
        batch = [(one, "first ", 0), (two, "second ", 0)]
        self.assertEqual(turns.append_contents(batch), [6, 7])
        self.assertEqual(turns.append_contents(batch), [6, 7])
        self.assertEqual((self.full_text(one), self.full_text(two)), ("first ", "second "))
        self.assertEqual(MessageChunk.objects.filter(message_id__in=[one, two]).count(), 2)

    def test_append_contents_at_a_wrong_offset_is_refused(self) -> None:
        """A piece whose offset is not the message's length (another writer went first) is not stored."""
        message_id = self.shell()
        turns.append_content(message_id, "abc")
        self.assertEqual(turns.append_contents([(message_id, "zzz", 0)]), [None])
        self.assertEqual(self.full_text(message_id), "abc")

    def test_refreshes_the_heartbeat(self) -> None:
        """An append moves the heartbeat forward: a streaming turn is alive."""
        message_id = self.shell()
        old = timezone.now() - timedelta(hours=1)
        Message.objects.filter(pk=message_id).update(heartbeat_at=old)
        turns.append_content(message_id, "x")
        self.assertGreater(Message.objects.get(pk=message_id).heartbeat_at, old)

    def test_a_fresh_heartbeat_stays_as_it_is(self) -> None:
        """Within TURN_HEARTBEAT_SECONDS an append leaves heartbeat_at and updated_at alone; older, both move."""
        message_id = self.shell()
        recent = timezone.now() - timedelta(seconds=settings.TURN_HEARTBEAT_SECONDS / 2)
        Message.objects.filter(pk=message_id).update(heartbeat_at=recent, updated_at=recent)
        turns.append_contents([(message_id, "a", 0)])
        turns.append_content(message_id, "b", 1)
        message = Message.objects.get(pk=message_id)
        self.assertEqual((message.heartbeat_at, message.updated_at, message.content_length), (recent, recent, 2))
        old = timezone.now() - timedelta(seconds=settings.TURN_HEARTBEAT_SECONDS * 2)
        Message.objects.filter(pk=message_id).update(heartbeat_at=old, updated_at=old)
        turns.append_contents([(message_id, "c", 2)])
        message = Message.objects.get(pk=message_id)
        self.assertGreater(message.heartbeat_at, recent)
        self.assertGreater(message.updated_at, recent)

    @skipUnless(connection.vendor == "postgresql", "HOT updates and fillfactor are PostgreSQL's")
    def test_appends_touch_no_index_on_postgresql(self) -> None:
        """The writer's appends are HOT updates (no index entry), on pages kept 20% free for them."""
        message_id = self.shell()
        turns.append_contents([(message_id, "first ", 0)])  # may move the row to a page with room

        def hot_updates() -> int:
            with connection.cursor() as cursor:
                cursor.execute("SELECT n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relname = 'chat_message'")
                return cursor.fetchone()[0]

        before = hot_updates()
        for offset in range(6, 16):
            turns.append_contents([(message_id, "x", offset)])
        # Within this one test transaction no old version can be pruned, so a
        # page may fill up before the tenth; the writer's commits prune them.
        self.assertGreaterEqual(hot_updates() - before, 8)
        with connection.cursor() as cursor:
            cursor.execute("SELECT reloptions FROM pg_class WHERE relname = 'chat_message'")
            self.assertIn("fillfactor=80", cursor.fetchone()[0])


class ActionTests(TurnTestCase):
    def test_start_stores_a_pending_action_at_the_text_position(self) -> None:
        """start_action stores a pending action whose position is the text length at that moment."""
        message_id = self.shell()
        turns.append_content(message_id, "Let me compute. ")
        result = turns.start_action(message_id, "call-1", "calculator", {"expression": "1+2"})
        action = AgentAction.objects.get(pk=result.id)
        self.assertTrue(result.created)
        self.assertEqual(
            (action.status, action.tool, action.input, action.position, action.output, action.finished_at),
            ("pending", "calculator", {"expression": "1+2"}, 16, None, None),
        )

    def test_start_is_idempotent_per_call_id(self) -> None:
        """The same call_id again returns the first action and stores nothing."""
        message_id = self.shell()
        first = turns.start_action(message_id, "call-1", "calculator", {"expression": "1+2"})
        again = turns.start_action(message_id, "call-1", "calculator", {"expression": "9"})
        self.assertEqual((again.id, again.created), (first.id, False))
        self.assertEqual(AgentAction.objects.count(), 1)
        self.assertEqual(AgentAction.objects.get().input, {"expression": "1+2"})

    def test_same_call_id_in_another_message_is_another_action(self) -> None:
        """call_id is unique per message only."""
        first = turns.start_action(self.shell("t-1"), "call-1", "clock", {})
        second = turns.start_action(self.shell("t-2"), "call-1", "clock", {})
        self.assertNotEqual(first.id, second.id)

    def test_finish_success(self) -> None:
        """finish_action moves pending to success with the output and a finish time."""
        action_id = turns.start_action(self.shell(), "call-1", "calculator", {"expression": "1+2"}).id
        action = turns.finish_action(action_id, "success", {"result": 3})
        self.assertEqual((action.status, action.output), ("success", {"result": 3}))
        self.assertIsNotNone(action.finished_at)

    def test_finish_error(self) -> None:
        """finish_action moves pending to error with the error output."""
        action_id = turns.start_action(self.shell(), "call-1", "calculator", {"expression": "1/0"}).id
        action = turns.finish_action(action_id, "error", {"error": "division by zero"})
        self.assertEqual((action.status, action.output), ("error", {"error": "division by zero"}))

    def test_first_finish_wins(self) -> None:
        """A second finish of the same action changes nothing."""
        action_id = turns.start_action(self.shell(), "call-1", "calculator", {}).id
        first = turns.finish_action(action_id, "success", {"result": 3})
        again = turns.finish_action(action_id, "error", {"error": "late"})
        self.assertEqual((again.status, again.output, again.finished_at), ("success", {"result": 3}, first.finished_at))

    def test_finish_refuses_an_unknown_status(self) -> None:
        """Only success and error finish an action."""
        action_id = turns.start_action(self.shell(), "call-1", "clock", {}).id
        with self.assertRaises(ValueError):
            turns.finish_action(action_id, "pending", None)
        self.assertEqual(AgentAction.objects.get(pk=action_id).status, "pending")


class LivenessTests(TurnTestCase):
    def age(self, message_id: int, seconds: float) -> None:
        Message.objects.filter(pk=message_id).update(heartbeat_at=timezone.now() - timedelta(seconds=seconds))

    def test_touch_refreshes_the_heartbeat(self) -> None:
        """touch_turn moves a streaming message's heartbeat to now and reports no cancel."""
        message_id = self.shell()
        self.age(message_id, 3600)
        self.assertFalse(turns.touch_turn(message_id))
        self.assertEqual(turns.stale_turns(60), [])

    def test_cancel_request_reaches_the_heartbeat(self) -> None:
        """After request_cancel, the running turn's next touch_turn returns True."""
        message_id = self.shell()
        self.assertEqual(turns.request_cancel(self.thread.pk), message_id)
        self.assertTrue(turns.touch_turn(message_id))

    def test_cancel_by_turn_id_flags_only_that_turn(self) -> None:
        """request_cancel with a turn_id flags that turn's message and no other."""
        first, second = self.shell("t-1"), self.shell("t-2")
        self.assertEqual(turns.request_cancel(self.thread.pk, "t-1"), first)
        self.assertEqual((turns.touch_turn(first), turns.touch_turn(second)), (True, False))

    def test_cancel_without_a_running_turn_returns_none(self) -> None:
        """request_cancel finds nothing to stop when no turn streams or the turn_id is unknown."""
        message_id = self.shell("t-1")
        self.assertIsNone(turns.request_cancel(self.thread.pk, "t-unknown"))
        turns.finalize_assistant_turn(message_id, "completed")
        self.assertIsNone(turns.request_cancel(self.thread.pk))
        self.assertFalse(Message.objects.get(pk=message_id).cancel_requested)

    def test_stale_turns_are_streaming_messages_with_an_old_heartbeat(self) -> None:
        """stale_turns lists streaming messages whose heartbeat is older than the limit, not fresh or final ones."""
        stale, fresh, final = self.shell("t-1"), self.shell("t-2"), self.shell("t-3")
        self.age(stale, 120)
        self.age(final, 120)
        turns.finalize_assistant_turn(final, "completed")
        self.assertEqual(turns.stale_turns(60), [stale])
        self.assertNotIn(fresh, turns.stale_turns(60 * 60))


class AsyncTwinTests(ChatTransactionTestCase):
    async def test_async_twins_write_the_same_rows(self) -> None:
        """The a-prefixed twins persist a whole turn like the sync functions."""
        from asgiref.sync import sync_to_async

        user = await sync_to_async(self.make_user)("erin")
        thread = await sync_to_async(self.make_thread)(user)
        user_message = await turns.apersist_user_turn(thread.pk, "t-1", "hi")
        shell = await turns.apersist_assistant_shell(thread.pk, "t-1")
        again = await turns.apersist_assistant_shell(thread.pk, "t-1")
        self.assertEqual(again.id, shell.id)
        self.assertEqual(await turns.aappend_content(shell.id, "hello"), 5)
        action = await turns.astart_action(shell.id, "c1", "clock", {})
        await turns.afinish_action(action.id, "success", {"now": "noon"})
        self.assertEqual((await endings.afinalize_assistant_turn(shell.id, "completed")).status, "completed")
        message = await Message.objects.aget(pk=shell.id)
        self.assertEqual((message.content, message.status, user_message.created), ("hello", "completed", True))


class ReadDuringFinalizeTests(TurnTestCase):
    def test_reader_that_saw_the_row_streaming_still_gets_the_full_text(self) -> None:
        """A finalize committed between a reader's row and piece queries cannot make the text look empty."""
        from chat import selectors

        message_id = self.shell()
        turns.append_content(message_id, "partial answer")
        row_read_first = Message.objects.get(pk=message_id)  # streaming, content "" (pieces not read yet)
        turns.finalize_assistant_turn(message_id, "cancelled")  # folds the pieces into content
        self.assertEqual(selectors.message_text(row_read_first), "partial answer")

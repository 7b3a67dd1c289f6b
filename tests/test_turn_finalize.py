"""Finalizing an assistant turn: final status and flags, folded text, usage once, never raising."""

from django.db import connection, connections

from chat import turns
from chat.models import AgentAction, Message, MessageChunk, TokenUsage
from tests.base import ChatTestCase, ChatTransactionTestCase

USAGE = {
    "model": "gpt-4o-mini",
    "prompt_tokens": 100,
    "completion_tokens": 20,
    "total_tokens": 120,
    "cost_micros": 27,
    "model_breakdown": {
        "gpt-4o-mini": {
            "prompt_tokens": 100,
            "completion_tokens": 20,
            "total_tokens": 120,
            "cost_micros": 27,
            "calls": 1,
        }
    },
    "call_details": [
        {"model": "gpt-4o-mini", "prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120, "cost_micros": 27}
    ],
}
OTHER_USAGE = {
    "model": "gpt-4o",
    "prompt_tokens": 5000,
    "completion_tokens": 5000,
    "total_tokens": 10000,
    "cost_micros": 62500,
}


class FinalizeTestCase(ChatTestCase):
    def setUp(self) -> None:
        self.user = self.make_user("alice")
        self.thread = self.make_thread(self.user)
        turns.persist_user_turn(self.thread.pk, "t-1", "hi")
        self.message_id = turns.persist_assistant_shell(self.thread.pk, "t-1").id

    def message(self) -> Message:
        return Message.objects.get(pk=self.message_id)


class FinalStatusTests(FinalizeTestCase):
    def test_completed_folds_the_pieces_into_content(self) -> None:
        """Completing a turn stores the full text in content, drops the pieces and clears streaming."""
        for delta in ("Hello ", "wörld ", "👋"):
            turns.append_content(self.message_id, delta)
        self.assertEqual(turns.finalize_assistant_turn(self.message_id, "completed").status, "completed")
        message = self.message()
        self.assertEqual((message.status, message.content, message.content_length), ("completed", "Hello wörld 👋", 13))
        self.assertEqual(
            (message.metadata["streaming"], message.metadata["cancelled"], message.metadata["has_error"]),
            (False, False, False),
        )
        self.assertFalse(MessageChunk.objects.filter(message_id=self.message_id).exists())

    def test_cancelled_keeps_the_partial_text(self) -> None:
        """A cancelled turn keeps what was streamed and sets metadata.cancelled."""
        turns.append_content(self.message_id, "partial")
        turns.finalize_assistant_turn(self.message_id, "cancelled")
        message = self.message()
        self.assertEqual((message.status, message.content), ("cancelled", "partial"))
        self.assertEqual(
            (message.metadata["streaming"], message.metadata["cancelled"], message.metadata["has_error"]),
            (False, True, False),
        )

    def test_failed_sets_has_error_and_keeps_the_error(self) -> None:
        """A failed turn sets has_error, stores the error and keeps its partial text."""
        error = {"code": "provider_error", "message": "upstream 503", "retryable": True}
        turns.append_content(self.message_id, "two words")
        turns.finalize_assistant_turn(self.message_id, "failed", error=error)
        message = self.message()
        self.assertEqual((message.status, message.content), ("failed", "two words"))
        self.assertEqual((message.metadata["has_error"], message.metadata["cancelled"]), (True, False))
        self.assertEqual(message.metadata["error"], error)

    def test_interrupted_sets_has_error(self) -> None:
        """An interrupted turn (its process died) is flagged has_error with streaming false."""
        turns.append_content(self.message_id, "cut")
        turns.finalize_assistant_turn(self.message_id, "interrupted")
        message = self.message()
        self.assertEqual(
            (message.status, message.content, message.metadata["streaming"], message.metadata["has_error"]),
            ("interrupted", "cut", False, True),
        )

    def test_empty_answer_reads_no_text_response(self) -> None:
        """A turn that ends without text stores "(no text response)"."""
        turns.finalize_assistant_turn(self.message_id, "completed")
        message = self.message()
        self.assertEqual((message.content, message.content_length), ("(no text response)", len("(no text response)")))

    def test_second_finalize_changes_nothing(self) -> None:
        """Finalizing twice keeps the first status, text and flags; the second call returns the first status."""
        turns.append_content(self.message_id, "stopped here")
        turns.finalize_assistant_turn(self.message_id, "cancelled")
        first = self.message()
        self.assertEqual(turns.finalize_assistant_turn(self.message_id, "completed").status, "cancelled")
        again = self.message()
        self.assertEqual((again.status, again.content, again.metadata), (first.status, first.content, first.metadata))

    def test_pending_actions_end_as_error(self) -> None:
        """A tool call still pending when the turn ends is closed as error; finished ones keep their result."""
        done = turns.start_action(self.message_id, "c1", "calculator", {"expression": "1+1"}).id
        turns.finish_action(done, "success", {"result": 2})
        pending = turns.start_action(self.message_id, "c2", "clock", {}).id
        turns.finalize_assistant_turn(self.message_id, "cancelled")
        self.assertEqual(AgentAction.objects.get(pk=done).status, "success")
        closed = AgentAction.objects.get(pk=pending)
        self.assertEqual(closed.status, "error")
        self.assertIsNotNone(closed.finished_at)

    def test_invalid_status_is_logged_not_raised(self) -> None:
        """An invalid final status logs an error, returns None and leaves the message streaming."""
        with self.assertLogs("chat.turns", "ERROR"):
            self.assertIsNone(turns.finalize_assistant_turn(self.message_id, "streaming"))
        self.assertEqual(self.message().status, "streaming")

    def test_missing_message_is_logged_not_raised(self) -> None:
        """Finalizing a message that does not exist logs it with the id and returns None."""
        with self.assertLogs("chat.turns", "WARNING") as logs:
            self.assertIsNone(turns.finalize_assistant_turn(987_654, "completed", usage=USAGE))
        self.assertIn("987654", "\n".join(logs.output))
        self.assertFalse(TokenUsage.objects.exists())

    def test_user_message_is_not_finalized(self) -> None:
        """Finalizing a user message's id changes nothing and records no usage."""
        user_message = Message.objects.get(thread=self.thread, role="user")
        with self.assertLogs("chat.turns", "WARNING"):
            self.assertIsNone(turns.finalize_assistant_turn(user_message.pk, "failed", usage=USAGE))
        user_message.refresh_from_db()
        self.assertEqual(user_message.status, "completed")
        self.assertFalse(TokenUsage.objects.exists())


class UsageOnceTests(FinalizeTestCase):
    def test_records_usage_for_the_message(self) -> None:
        """Usage given at finalize is stored once, tied to the message, its thread and the thread's owner."""
        turns.finalize_assistant_turn(self.message_id, "completed", usage=USAGE)
        usage = TokenUsage.objects.get()
        self.assertEqual(
            (usage.message_id, usage.thread_id, usage.user_id), (self.message_id, self.thread.pk, self.user.pk)
        )
        self.assertEqual(
            (
                usage.usage_type,
                usage.model,
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.total_tokens,
                usage.cost_micros,
            ),
            ("turn", "gpt-4o-mini", 100, 20, 120, 27),
        )
        self.assertEqual((usage.model_breakdown, usage.call_details), (USAGE["model_breakdown"], USAGE["call_details"]))

    def test_second_finalize_keeps_the_first_cost(self) -> None:
        """A second finalize with other usage inserts no row and leaves the first cost standing."""
        turns.finalize_assistant_turn(self.message_id, "completed", usage=USAGE)
        turns.finalize_assistant_turn(self.message_id, "completed", usage=OTHER_USAGE)
        self.assertEqual(TokenUsage.objects.count(), 1)
        self.assertEqual((TokenUsage.objects.get().model, TokenUsage.objects.get().cost_micros), ("gpt-4o-mini", 27))

    def test_late_usage_is_recorded_once(self) -> None:
        """Usage arriving after a finalize without usage is recorded, and only the first late writer counts."""
        turns.finalize_assistant_turn(self.message_id, "cancelled")
        self.assertFalse(TokenUsage.objects.exists())
        turns.finalize_assistant_turn(self.message_id, "completed", usage=USAGE)
        turns.finalize_assistant_turn(self.message_id, "completed", usage=OTHER_USAGE)
        self.assertEqual(list(TokenUsage.objects.values_list("cost_micros", flat=True)), [27])
        self.assertEqual(self.message().status, "cancelled")

    def test_usage_refused_by_the_database_is_logged(self) -> None:
        """Usage the database refuses (a negative count) is logged with the message id; the turn still ends."""
        with self.assertLogs("chat.turns", "ERROR") as logs:
            status = turns.finalize_assistant_turn(
                self.message_id, "completed", usage={**USAGE, "prompt_tokens": -1}
            ).status
        self.assertEqual((status, self.message().status), ("completed", "completed"))
        self.assertFalse(TokenUsage.objects.exists())
        self.assertIn(str(self.message_id), "\n".join(logs.output))

    def test_malformed_usage_does_not_keep_the_turn_streaming(self) -> None:
        """Usage that cannot be stored at all is logged, and the message still gets its final status."""
        turns.append_content(self.message_id, "answer")
        with self.assertLogs("chat.turns", "ERROR"):
            status = turns.finalize_assistant_turn(
                self.message_id, "completed", usage={**USAGE, "prompt_tokens": "many"}
            ).status
        self.assertEqual(status, "completed")
        self.assertEqual((self.message().status, self.message().content), ("completed", "answer"))
        self.assertFalse(TokenUsage.objects.exists())

    def test_usage_that_is_not_a_dict_does_not_keep_the_turn_streaming(self) -> None:
        """Usage of the wrong shape is logged and ignored; the message still ends."""
        with self.assertLogs("chat.turns", "ERROR"):
            status = turns.finalize_assistant_turn(self.message_id, "completed", usage=[1, 2, 3]).status
        self.assertEqual((status, self.message().status), ("completed", "completed"))
        self.assertFalse(TokenUsage.objects.exists())

    def test_error_that_json_cannot_store_still_ends_the_turn(self) -> None:
        """An error object with values JSON cannot hold is stored as the contract's code, message and retryable."""
        error = {"code": "provider_error", "message": ValueError("boom"), "retryable": 1, "extra": object()}
        self.assertEqual(turns.finalize_assistant_turn(self.message_id, "failed", error=error).status, "failed")
        message = self.message()
        self.assertEqual(message.status, "failed")
        self.assertEqual(message.metadata["error"], {"code": "provider_error", "message": "boom", "retryable": True})

    def test_no_usage_stores_no_row(self) -> None:
        """Finalizing without usage stores no usage row."""
        turns.finalize_assistant_turn(self.message_id, "completed")
        self.assertFalse(TokenUsage.objects.exists())


class FinalizeDatabaseErrorTests(ChatTransactionTestCase):
    """A real database error (a lock that cannot be taken) inside finalize is logged, not raised."""

    def setUp(self) -> None:
        self.thread = self.make_thread(self.make_user("alice"))
        self.message_id = turns.persist_assistant_shell(self.thread.pk, "t-1").id
        turns.append_content(self.message_id, "partial")

    def test_database_error_is_logged_not_raised(self) -> None:
        """When the database refuses the finalize, it logs the error with the message id and returns None."""
        blocker = connections.create_connection("default")
        try:
            with blocker.cursor() as cursor, connection.cursor() as own:
                if connection.vendor == "sqlite":
                    cursor.execute("BEGIN IMMEDIATE")
                    own.execute("PRAGMA busy_timeout = 100")
                else:
                    cursor.execute("BEGIN")
                    cursor.execute("SELECT id FROM chat_message WHERE id = %s FOR UPDATE", [self.message_id])
                    own.execute("SET lock_timeout = '100ms'")
                try:
                    with self.assertLogs("chat.turns", "ERROR") as logs:
                        result = turns.finalize_assistant_turn(self.message_id, "completed", usage=USAGE)
                finally:
                    cursor.execute("ROLLBACK")
                    if connection.vendor == "sqlite":
                        own.execute("PRAGMA busy_timeout = 30000")
                    else:
                        own.execute("RESET lock_timeout")
        finally:
            blocker.close()
        self.assertIsNone(result)
        self.assertIn(f"message={self.message_id}", "\n".join(logs.output))
        # Nothing was half-written: the turn can still be finalized.
        self.assertEqual(Message.objects.get(pk=self.message_id).status, "streaming")
        self.assertEqual(turns.finalize_assistant_turn(self.message_id, "completed", usage=USAGE).status, "completed")
        self.assertEqual(Message.objects.get(pk=self.message_id).content, "partial")
        self.assertEqual(TokenUsage.objects.count(), 1)

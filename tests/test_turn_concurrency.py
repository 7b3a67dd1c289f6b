"""Turn writes from many threads at once, each on its own database connection."""

from chat import turns
from chat.models import Message, TokenUsage
from tests.base import ChatTransactionTestCase, run_concurrently

WRITERS = 50


class ConcurrentTurnTests(ChatTransactionTestCase):
    def setUp(self) -> None:
        self.user = self.make_user("alice")
        self.thread = self.make_thread(self.user)

    def assert_no_errors(self, results: list) -> None:
        errors = [r for r in results if isinstance(r, BaseException)]
        self.assertEqual(errors, [], "a concurrent writer raised")

    def test_fifty_writers_get_seq_one_to_fifty(self) -> None:
        """50 concurrent writers into one thread get seq 1..50 with no gap and no duplicate."""
        thread_id = self.thread.pk
        results = run_concurrently(
            [lambda i=i: turns.persist_user_turn(thread_id, f"turn-{i}", f"message {i}") for i in range(WRITERS)]
        )
        self.assert_no_errors(results)
        seqs = sorted(Message.objects.filter(thread_id=thread_id).values_list("seq", flat=True))
        self.assertEqual(seqs, list(range(1, WRITERS + 1)))
        self.thread.refresh_from_db()
        self.assertEqual(self.thread.last_seq, WRITERS)

    def test_duplicate_user_turns_store_one_message(self) -> None:
        """Concurrent calls with one turn_id all return the same id, store one row and raise nothing."""
        thread_id = self.thread.pk
        results = run_concurrently([lambda: turns.persist_user_turn(thread_id, "same", "hello")] * 10)
        self.assert_no_errors(results)
        self.assertEqual({r.id for r in results}, {Message.objects.get().pk})
        self.assertEqual(sum(r.created for r in results), 1)
        self.thread.refresh_from_db()
        self.assertEqual(self.thread.last_seq, 1)

    def test_duplicate_shells_store_one_message(self) -> None:
        """Concurrent shells for one turn all return the same streaming message."""
        thread_id = self.thread.pk
        results = run_concurrently([lambda: turns.persist_assistant_shell(thread_id, "same")] * 10)
        self.assert_no_errors(results)
        self.assertEqual(len({r.id for r in results}), 1)
        self.assertEqual(Message.objects.filter(role="assistant").count(), 1)

    def test_concurrent_appends_lose_nothing(self) -> None:
        """Appends from several writers at once all land: the length and the text add up."""
        message_id = turns.persist_assistant_shell(self.thread.pk, "t-1").id
        deltas = [f"<{i:02d}é>" for i in range(20)]
        results = run_concurrently([lambda d=d: turns.append_content(message_id, d) for d in deltas])
        self.assert_no_errors(results)
        self.assertEqual(sorted(results), [5 * (i + 1) for i in range(20)])
        text = self.full_text(message_id)
        self.assertEqual(len(text), 100)
        self.assertEqual(sorted(text[i : i + 5] for i in range(0, 100, 5)), sorted(deltas))

    def test_concurrent_finalizers_record_usage_once(self) -> None:
        """Concurrent finalizers with different usage end with one status and one usage row."""
        message_id = turns.persist_assistant_shell(self.thread.pk, "t-1").id
        turns.append_content(message_id, "answer")
        usages = [{"model": f"m{i}", "total_tokens": i, "cost_micros": i} for i in range(1, 11)]
        results = run_concurrently(
            [lambda u=u: turns.finalize_assistant_turn(message_id, "completed", usage=u) for u in usages]
        )
        self.assertEqual([r.status for r in results], ["completed"] * 10)
        self.assertEqual(sum(r.closed for r in results), 1)  # one of them ended it, and only that one announces
        self.assertEqual(TokenUsage.objects.filter(message_id=message_id).count(), 1)
        self.assertEqual(Message.objects.get(pk=message_id).content, "answer")

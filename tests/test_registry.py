"""The per-process registry of running turns (agents.registry.AgentTaskRegistry)."""

from __future__ import annotations

import random
import threading

from django.test import SimpleTestCase

from agents.registry import AgentTaskRegistry, registry
from tests.base import run_concurrently


class RegistryTestCase(SimpleTestCase):
    def setUp(self) -> None:
        self.registry = AgentTaskRegistry()


class RegisterTests(RegistryTestCase):
    def test_register_returns_the_new_running_turn(self) -> None:
        """register() returns a running, uncancelled turn with the thread and turn ids given, no message yet."""
        turn, previous = self.registry.register(7, "t-1")
        self.assertEqual((turn.thread_id, turn.turn_id, turn.message_id), (7, "t-1", None))
        self.assertTrue(turn.running)
        self.assertFalse(turn.cancel_event.is_set())
        self.assertEqual(previous, [])
        self.assertIs(self.registry.get(7, "t-1"), turn)

    def test_register_cancels_and_returns_the_running_turn_of_the_thread(self) -> None:
        """A second turn in a thread cancels the first and returns it; the new one is not cancelled."""
        first, _ = self.registry.register(7, "t-1")
        second, previous = self.registry.register(7, "t-2")
        self.assertEqual(previous, [first])
        self.assertTrue(first.cancel_event.is_set())
        self.assertFalse(second.cancel_event.is_set())

    def test_register_calls_the_on_cancel_callback_of_the_previous_turn(self) -> None:
        """Cancelling by registration interrupts what the previous turn awaits (its on_cancel)."""
        first, _ = self.registry.register(7, "t-1")
        calls = []
        first.on_cancel = lambda: calls.append("cancelled")
        self.registry.register(7, "t-2")
        self.assertEqual(calls, ["cancelled"])

    def test_register_leaves_other_threads_alone(self) -> None:
        """A turn in another thread is neither cancelled nor returned."""
        other, _ = self.registry.register(8, "t-1")
        _, previous = self.registry.register(7, "t-1")
        self.assertEqual(previous, [])
        self.assertFalse(other.cancel_event.is_set())

    def test_register_does_not_return_completed_turns(self) -> None:
        """A completed turn of the thread is not cancelled again nor returned."""
        first, _ = self.registry.register(7, "t-1")
        self.registry.mark_completed(7, "t-1")
        _, previous = self.registry.register(7, "t-2")
        self.assertEqual(previous, [])
        self.assertFalse(first.cancel_event.is_set())

    def test_shared_instance(self) -> None:
        """agents.registry.registry is one AgentTaskRegistry shared by the process."""
        from agents import registry as module

        self.assertIsInstance(registry, AgentTaskRegistry)
        self.assertIs(module.registry, registry)


class GetTests(RegistryTestCase):
    def test_get_unknown_is_none(self) -> None:
        """get() of a turn never registered, or of another thread, is None."""
        self.registry.register(7, "t-1")
        self.assertIsNone(self.registry.get(7, "t-2"))
        self.assertIsNone(self.registry.get(8, "t-1"))

    def test_get_finds_completed_turns_until_cleaned_up(self) -> None:
        """A completed turn is still found (not running) until cleanup_completed()."""
        turn, _ = self.registry.register(7, "t-1")
        self.registry.mark_completed(7, "t-1")
        self.assertIs(self.registry.get(7, "t-1"), turn)
        self.assertFalse(turn.running)

    def test_running_lists_only_running_turns(self) -> None:
        """running() and running_in_thread() leave completed turns out."""
        self.registry.register(7, "t-1")
        running, _ = self.registry.register(8, "t-1")
        self.registry.mark_completed(7, "t-1")
        self.assertEqual(self.registry.running(), [running])
        self.assertIsNone(self.registry.running_in_thread(7))
        self.assertIs(self.registry.running_in_thread(8), running)


class CancelTests(RegistryTestCase):
    def test_cancel_running_turn(self) -> None:
        """cancel() of a running turn sets its cancel event, calls on_cancel and returns True."""
        turn, _ = self.registry.register(7, "t-1")
        calls = []
        turn.on_cancel = lambda: calls.append(1)
        self.assertTrue(self.registry.cancel(7, "t-1"))
        self.assertTrue(turn.cancel_event.is_set())
        self.assertEqual(calls, [1])

    def test_cancel_unknown_turn_is_false(self) -> None:
        """cancel() of an unknown turn, thread, or a thread with no turn returns False."""
        self.registry.register(7, "t-1")
        self.assertFalse(self.registry.cancel(7, "t-2"))
        self.assertFalse(self.registry.cancel(8, "t-1"))
        self.assertFalse(self.registry.cancel(8))

    def test_cancel_completed_turn_is_false(self) -> None:
        """A completed turn cannot be cancelled: False, its event stays clear, on_cancel is not called."""
        turn, _ = self.registry.register(7, "t-1")
        calls = []
        turn.on_cancel = lambda: calls.append(1)
        self.registry.mark_completed(7, "t-1")
        self.assertFalse(self.registry.cancel(7, "t-1"))
        self.assertFalse(self.registry.cancel(7))
        self.assertFalse(turn.cancel_event.is_set())
        self.assertEqual(calls, [])

    def test_cancel_without_turn_id_cancels_the_thread_running_turn(self) -> None:
        """cancel(thread_id) cancels the thread's running turn and nothing in other threads."""
        turn, _ = self.registry.register(7, "t-1")
        other, _ = self.registry.register(8, "t-9")
        self.assertTrue(self.registry.cancel(7))
        self.assertTrue(turn.cancel_event.is_set())
        self.assertFalse(other.cancel_event.is_set())

    def test_cancel_without_turn_id_picks_the_latest_running_turn(self) -> None:
        """With two turns still running in a thread, cancel(thread_id) reaches the newest one."""
        self.registry.register(7, "t-1")  # cancelled by the next register, but not yet completed
        newest, _ = self.registry.register(7, "t-2")
        calls = []
        newest.on_cancel = lambda: calls.append("t-2")
        self.assertTrue(self.registry.cancel(7))
        self.assertTrue(newest.cancel_event.is_set())
        self.assertEqual(calls, ["t-2"])

    def test_cancel_without_turn_id_skips_completed_turns(self) -> None:
        """cancel(thread_id) ignores a newer completed turn and reaches the one still running."""
        older, _ = self.registry.register(7, "t-1")
        self.registry.register(7, "t-2")
        older.cancel_event.clear()
        self.registry.mark_completed(7, "t-2")
        self.assertTrue(self.registry.cancel(7))
        self.assertTrue(older.cancel_event.is_set())

    def test_cancel_twice_is_true_until_completed(self) -> None:
        """A cancelled turn that has not finished yet is still running: cancelling again is True."""
        self.registry.register(7, "t-1")
        self.assertTrue(self.registry.cancel(7, "t-1"))
        self.assertTrue(self.registry.cancel(7, "t-1"))
        self.registry.mark_completed(7, "t-1")
        self.assertFalse(self.registry.cancel(7, "t-1"))


class CompletionTests(RegistryTestCase):
    def test_mark_completed_stops_running_and_drops_on_cancel(self) -> None:
        """mark_completed() ends the turn's running state and forgets its on_cancel callback."""
        turn, _ = self.registry.register(7, "t-1")
        turn.on_cancel = lambda: None
        self.registry.mark_completed(7, "t-1")
        self.assertFalse(turn.running)
        self.assertIsNotNone(turn.completed_at)
        self.assertIsNone(turn.on_cancel)

    def test_mark_completed_twice_keeps_the_first_time(self) -> None:
        """A second mark_completed() does not move the completion time."""
        turn, _ = self.registry.register(7, "t-1")
        self.registry.mark_completed(7, "t-1")
        first = turn.completed_at
        self.registry.mark_completed(7, "t-1")
        self.assertEqual(turn.completed_at, first)

    def test_mark_completed_unknown_is_a_no_op(self) -> None:
        """mark_completed() of an unknown turn changes nothing and raises nothing."""
        self.registry.mark_completed(7, "nope")
        self.assertIsNone(self.registry.get(7, "nope"))
        self.assertEqual(self.registry.running(), [])


class CleanupTests(RegistryTestCase):
    def test_cleanup_completed_removes_turns_completed_longer_ago(self) -> None:
        """cleanup_completed(age) forgets turns completed more than `age` seconds ago and counts them."""
        old, _ = self.registry.register(7, "t-1")
        self.registry.mark_completed(7, "t-1")
        old.completed_at -= 120  # completed two minutes ago
        self.assertEqual(self.registry.cleanup_completed(60), 1)
        self.assertIsNone(self.registry.get(7, "t-1"))

    def test_cleanup_completed_keeps_recent_turns(self) -> None:
        """A turn completed just now survives cleanup_completed(60)."""
        self.registry.register(7, "t-1")
        self.registry.mark_completed(7, "t-1")
        self.assertEqual(self.registry.cleanup_completed(60), 0)
        self.assertIsNotNone(self.registry.get(7, "t-1"))

    def test_cleanup_completed_never_removes_running_turns(self) -> None:
        """A running turn, however old, survives cleanup_completed(0)."""
        running, _ = self.registry.register(7, "t-1")
        self.registry.register(8, "t-1")
        self.registry.mark_completed(8, "t-1")
        self.assertEqual(self.registry.cleanup_completed(0), 1)
        self.assertIs(self.registry.get(7, "t-1"), running)
        self.assertEqual(self.registry.running(), [running])

    def test_a_thread_cleaned_up_finds_its_next_turn(self) -> None:
        """After its turns are forgotten, a thread's new turn is its running one, and other threads' stay theirs."""
        self.registry.register(7, "t-1")
        self.registry.mark_completed(7, "t-1")
        other, _ = self.registry.register(8, "t-1")
        self.registry.cleanup_completed(0)
        newer, previous = self.registry.register(7, "t-2")
        self.assertEqual(previous, [])
        self.assertIs(self.registry.running_in_thread(7), newer)
        self.assertIs(self.registry.running_in_thread(8), other)
        self.assertIsNone(self.registry.running_in_thread(9))

    def test_a_turn_registered_again_is_the_one_found(self) -> None:
        """Registering a turn_id again replaces it: get() and running_in_thread() give the new one."""
        first, _ = self.registry.register(7, "t-1")
        self.registry.register(7, "t-2")
        again, previous = self.registry.register(7, "t-1")
        self.assertIn(first, previous)
        self.assertIs(self.registry.get(7, "t-1"), again)
        self.assertIs(self.registry.running_in_thread(7), again)


class ConcurrencyTests(RegistryTestCase):
    THREADS = 16
    OPERATIONS = 1000
    THREAD_IDS = range(4)

    def test_concurrent_register_cancel_complete(self) -> None:
        """16 threads registering, cancelling, completing, forgetting turns at once: no error, one live turn each."""
        callbacks = {"count": 0}
        callbacks_lock = threading.Lock()

        def on_cancel() -> None:
            with callbacks_lock:
                callbacks["count"] += 1

        def worker(index: int) -> list[tuple[int, str]]:
            rng = random.Random(index)
            mine: list[tuple[int, str]] = []
            for i in range(self.OPERATIONS):
                thread_id = rng.choice(self.THREAD_IDS)
                action = rng.random()
                if action < 0.3:
                    turn, previous = self.registry.register(thread_id, f"w{index}-{i}")
                    turn.on_cancel = on_cancel
                    mine.append((thread_id, turn.turn_id))
                    assert all(p.thread_id == thread_id and p is not turn for p in previous)
                elif action < 0.45:
                    self.registry.cancel(thread_id)
                elif action < 0.55 and mine:
                    self.registry.cancel(*rng.choice(mine))
                elif action < 0.85 and mine:
                    self.registry.mark_completed(*mine.pop(rng.randrange(len(mine))))
                elif action < 0.9:
                    self.registry.cleanup_completed(0)
                else:
                    self.registry.running_in_thread(thread_id)
                    self.registry.running()
            return mine

        results = run_concurrently([lambda i=i: worker(i) for i in range(self.THREADS)])
        errors = [r for r in results if isinstance(r, BaseException)]
        self.assertEqual(errors, [])

        # Registering cancels every running turn of the thread, so once all
        # calls returned, at most one turn per thread is running and not cancelled.
        for thread_id in self.THREAD_IDS:
            live = [t for t in self.registry.running() if t.thread_id == thread_id and not t.cancel_event.is_set()]
            self.assertLessEqual(len(live), 1, f"thread {thread_id}: {[t.turn_id for t in live]}")
        # Every running turn is one nobody marked completed; every completed one is not running.
        still_mine = {key for result in results for key in result}
        for turn in self.registry.running():
            self.assertIn((turn.thread_id, turn.turn_id), still_mine)
        self.assertGreater(callbacks["count"], 0)

        # Complete everything: nothing runs and a cleanup empties the registry.
        for key in still_mine:
            self.registry.mark_completed(*key)
        self.assertEqual(self.registry.running(), [])
        self.registry.cleanup_completed(0)
        self.assertEqual([key for key in still_mine if self.registry.get(*key) is not None], [])

    def test_concurrent_registrations_in_one_thread_leave_one_live_turn(self) -> None:
        """16 threads registering turns for the same thread at once: exactly one ends uncancelled."""
        barrier_results = run_concurrently(
            [lambda i=i: self.registry.register(1, f"t-{i}")[0] for i in range(self.THREADS)]
        )
        self.assertFalse([r for r in barrier_results if isinstance(r, BaseException)])
        live = [t for t in barrier_results if not t.cancel_event.is_set()]
        self.assertEqual(len(live), 1)
        self.assertEqual(len(self.registry.running()), self.THREADS)

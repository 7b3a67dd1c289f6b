"""Many turns started in one hop (chat.starts): the same rows, dicts and answers as starting each alone."""

from __future__ import annotations

import asyncio
from unittest import mock

from django.db import IntegrityError, transaction

from agents import catalog, opening
from chat import selectors, starts, turns
from chat.models import Agent, Message, Thread
from tests.base import ChatTestCase, ChatTransactionTestCase, read_committed, to_thread

RUNNER = "specific.test!runner"


def start(thread_id: int, turn_id: str, text: str = "hello", parent: object = turns.ACTIVE_LEAF) -> tuple:
    return (thread_id, turn_id, text, None, parent), {"runner": RUNNER}


class BatchedStartTests(ChatTestCase):
    def setUp(self) -> None:
        self.user = self.make_user()

    def answered_thread(self) -> Thread:
        """A thread with one finished turn: a new message follows its answer."""
        thread = self.make_thread(self.user)
        message = turns.persist_user_turn(thread.pk, "old", "before")
        answer = turns.persist_assistant_shell(thread.pk, "old", parent_id=message.id)
        turns.append_content(answer.id, "an answer")
        turns.finalize_assistant_turn(answer.id, Message.Status.COMPLETED)
        return thread

    def assert_started_like_alone(self, thread: Thread, opened: opening.OpenedTurn, text: str) -> None:
        """What a start alone guarantees: the dict reads back the same, the shell answers it and is the leaf."""
        self.assertTrue(opened.created)
        self.assertEqual(opened.message, selectors.user_message_dict(opened.message["id"]))
        self.assertEqual(opened.message["content"], text)
        assert opened.answer is not None
        shell = Message.objects.get(pk=opened.answer.id)
        self.assertEqual(
            (shell.role, shell.status, shell.parent_id, shell.runner, shell.seq),
            ("assistant", "streaming", opened.message["id"], RUNNER, opened.message["seq"] + 1),
        )
        self.assertEqual(shell.metadata["agent"], opened.agent.name)
        self.assertIsNotNone(shell.heartbeat_at)
        thread.refresh_from_db()
        self.assertEqual((thread.active_leaf_id, thread.last_seq), (shell.pk, shell.seq))
        self.assertEqual(opened.history, selectors.history_entries(thread.pk, shell.pk))

    def test_plain_starts_of_fresh_and_answered_threads(self) -> None:
        fresh = [self.make_thread(self.user) for _ in range(5)]
        answered = [self.answered_thread() for _ in range(3)]
        calls = [start(t.pk, f"new-{t.pk}", f"text {t.pk}") for t in fresh + answered]
        alone = mock.patch.object(turns, "_insert_turn_message", wraps=turns._insert_turn_message)
        with alone as one_by_one, transaction.atomic():
            outcomes = opening.open_turns(calls)
        self.assertEqual(one_by_one.call_count, 0, "every start was taken by the batch")
        for thread, (ok, opened) in zip(fresh + answered, outcomes, strict=True):
            self.assertTrue(ok, opened)
            self.assert_started_like_alone(thread, opened, f"text {thread.pk}")
        for thread, (_, opened) in zip(answered, outcomes[5:], strict=True):
            old_answer = Message.objects.get(thread=thread, turn_id="old", role="assistant")
            self.assertEqual(opened.message["parent_id"], old_answer.pk)
            self.assertEqual(opened.message["versions"], [opened.message["id"]])
            self.assertEqual([e["content"] for e in opened.history], ["before", "an answer", f"text {thread.pk}"])

    def test_starts_not_taken_are_stored_alone_with_their_own_outcome(self) -> None:
        """A thread twice, a repeated turn_id, a streaming thread, an edit, a thread gone: as each alone."""
        twice, repeated, streaming, edited, plain = (self.make_thread(self.user) for _ in range(5))
        first = turns.persist_user_turn(repeated.pk, "seen", "first send")
        busy = turns.persist_user_turn(streaming.pk, "busy", "running")
        turns.persist_assistant_shell(streaming.pk, "busy", parent_id=busy.id)
        root = turns.persist_user_turn(edited.pk, "root", "root")
        calls = [
            start(twice.pk, "a", "one"),
            start(twice.pk, "b", "two"),
            start(repeated.pk, "seen", "second send"),
            start(streaming.pk, "next", "while busy"),
            start(edited.pk, "edit", "edited", parent=None),
            start(999_999, "gone"),
            start(plain.pk, "plain", "plain"),
        ]
        with transaction.atomic():
            outcomes = opening.open_turns(calls)
        (ok_a, a), (ok_b, b), (ok_r, r), (ok_s, s), (ok_e, e), (ok_g, g), (ok_p, p) = outcomes
        self.assertTrue(ok_a and ok_b and ok_r and ok_s and ok_e and ok_p)
        self.assertIsNotNone(a.answer)  # the first of the thread answers at once
        self.assertEqual((b.created, b.running, b.answer), (True, True, None))  # the second finds it streaming
        self.assertEqual((r.created, r.message["id"], r.message["content"]), (False, first.id, "first send"))
        self.assertEqual((s.created, s.running, s.answer), (True, True, None))
        self.assertEqual((e.message["parent_id"], e.message["versions"]), (None, [root.id, e.message["id"]]))
        self.assertFalse(ok_g)
        self.assertIsInstance(g, ValueError)
        self.assert_started_like_alone(plain, p, "plain")

    def test_each_start_runs_with_its_threads_agent_and_a_misconfigured_one_fails_alone(self) -> None:
        bad, own, default = (self.make_thread(self.user) for _ in range(3))
        bad.agent = Agent.objects.create(name="broken", provider="nope")
        bad.save()
        own.agent = Agent.objects.create(name="writer", provider="local", system_prompt="Write.")
        own.system_prompt = "Briefly."
        own.save()
        with transaction.atomic():
            outcomes = opening.open_turns([start(bad.pk, "x"), start(own.pk, "y"), start(default.pk, "z")])
        self.assertFalse(outcomes[0][0])
        self.assertIsInstance(outcomes[0][1], ValueError)
        self.assertFalse(Message.objects.filter(thread=bad).exists())
        for thread, (ok, opened) in zip((own, default), outcomes[1:], strict=True):
            self.assertTrue(ok, opened)
            self.assert_started_like_alone(thread, opened, "hello")
            alone = catalog.turn_agent(thread.pk)
            self.assertEqual((opened.agent.name, opened.agent.system_prompt), (alone.name, alone.system_prompt))
        self.assertEqual(
            (outcomes[1][1].agent.name, outcomes[1][1].agent.system_prompt), ("writer", "Write.\n\nBriefly.")
        )


class BatchedAnswerTests(ChatTestCase):
    """A worker opens the answers of the turns it is sent: agents.opening's batch, agents and shells together."""

    def setUp(self) -> None:
        self.user = self.make_user()

    def asked(self, turn_id: str = "t") -> tuple[Thread, int]:
        thread = self.make_thread(self.user)
        return thread, turns.persist_user_turn(thread.pk, turn_id, f"question {thread.pk}").id

    def open_answer(self, thread_id: int, turn_id: str, parent_id: object, activate: bool | None = None) -> tuple:
        return (thread_id, turn_id, None, RUNNER), {"parent_id": parent_id, "activate": activate}

    def test_answers_as_opened_alone(self) -> None:
        plain = [self.asked() for _ in range(4)]
        regenerated, first = self.asked()
        moved, moved_question = self.asked()
        turns.persist_user_turn(moved.pk, "later", "the path moved on")  # the leaf is no longer the question
        repeated, repeated_question = self.asked()
        existing = turns.persist_assistant_shell(repeated.pk, "t", parent_id=repeated_question)
        followed, _ = self.asked()
        calls = [self.open_answer(t.pk, "t", q) for t, q in plain] + [
            self.open_answer(regenerated.pk, "again", first, activate=True),
            self.open_answer(moved.pk, "t", moved_question),
            self.open_answer(repeated.pk, "t", repeated_question),
            self.open_answer(followed.pk, "t", turns.ACTIVE_LEAF),
        ]
        alone = mock.patch.object(turns, "open_answer", wraps=turns.open_answer)
        with alone as one_by_one, transaction.atomic():
            outcomes = opening.open_answers(calls)
        self.assertEqual(one_by_one.call_count, 2, "the repeated turn and the parent to be found ran alone")
        self.assertTrue(all(ok for ok, _ in outcomes), outcomes)
        agent = catalog.turn_agent(plain[0][0].pk)
        for (thread, question), (_, opened) in zip(plain, outcomes[:4], strict=True):
            shell, history = Message.objects.get(pk=opened.answer.id), opened.history
            thread.refresh_from_db()
            self.assertEqual((opened.agent.name, opened.agent.model), (agent.name, agent.model))
            self.assertEqual(
                (shell.parent_id, shell.status, shell.runner, shell.metadata["model"]),
                (question, "streaming", RUNNER, agent.model),
            )
            self.assertEqual((thread.active_leaf_id, thread.last_seq), (shell.pk, shell.seq))
            self.assertEqual(history, selectors.history_entries(thread.pk, shell.pk))
            self.assertEqual([e["content"] for e in history], [f"question {thread.pk}"])
        again, kept, repeat, follow = (outcome for _, outcome in outcomes[4:])
        self.assertEqual(Thread.objects.get(pk=regenerated.pk).active_leaf_id, again.answer.id)
        moved_leaf = Message.objects.get(thread=moved, turn_id="later").pk
        self.assertEqual(Thread.objects.get(pk=moved.pk).active_leaf_id, moved_leaf, "the path was not pulled back")
        self.assertTrue(kept.answer.created)
        self.assertEqual(repeat.answer, turns.Persisted(existing.id, False))
        self.assertTrue(follow.answer.created)


class BatchedFactsTests(ChatTestCase):
    def test_facts_of_many_messages_read_together_equal_each_read_alone(self) -> None:
        """Repeated, regenerated and new turn_ids; users with running turns here and elsewhere, one gone stale."""
        from datetime import timedelta

        from django.utils import timezone

        alice, bob = self.make_user("alice"), self.make_user("bob")
        threads = [self.make_thread(alice) for _ in range(4)] + [self.make_thread(bob) for _ in range(2)]
        sent = turns.persist_user_turn(threads[0].pk, "sent", "once")
        for n, thread in enumerate(threads[1:4] + threads[4:5]):
            asked = turns.persist_user_turn(thread.pk, f"run{n}", "running")
            turns.persist_assistant_shell(thread.pk, f"run{n}", parent_id=asked.id)
        turns.persist_assistant_shell(threads[5].pk, "regen", parent_id=None)
        stale = Message.objects.get(thread=threads[3], role="assistant")
        Message.objects.filter(pk=stale.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
        asked = [
            (alice.pk, threads[0].pk, "sent"),
            (alice.pk, threads[0].pk, "new"),
            (alice.pk, threads[1].pk, None),
            (alice.pk, threads[2].pk, "run1"),
            (bob.pk, threads[5].pk, "regen"),
            (bob.pk, threads[4].pk, "fresh"),
        ]
        together = selectors.turn_facts_many(asked, 6.0)
        self.assertEqual(together, [selectors.turn_facts(*a, 6.0) for a in asked])
        self.assertEqual(together[0].stored_user_message["id"], sent.id)
        self.assertEqual([f.live_elsewhere for f in together], [2, 2, 1, 1, 1, 1])
        self.assertEqual((together[4].turn_exists, together[4].stored_user_message), (True, None))


class BatchedHopTests(ChatTransactionTestCase):
    async def test_a_burst_of_starts_takes_one_batch_and_each_gets_its_answer(self) -> None:
        user = await read_committed(self.make_user)
        threads = await to_thread(lambda: [self.make_thread(user).pk for _ in range(40)])
        with mock.patch.object(starts, "store_new_turns", wraps=starts.store_new_turns) as batch:
            opened = await asyncio.gather(
                *(opening.aopen_turn(t, f"burst-{t}", "hi", None, turns.ACTIVE_LEAF, runner=RUNNER) for t in threads)
            )
        self.assertIn(batch.call_count, (1, 2), "the first start's hop, then all that waited for it")
        self.assertTrue(all(o.created and o.answer is not None for o in opened))
        leaves = await to_thread(
            lambda: dict(Thread.objects.filter(pk__in=threads).values_list("pk", "active_leaf_id"))
        )
        self.assertEqual(leaves, {t: o.answer.id for t, o in zip(threads, opened, strict=True)})

    async def test_a_batch_that_fails_as_a_whole_leaves_each_start_to_run_alone(self) -> None:
        """A concurrent writer broke a constraint under the batch: it rolls back and each start runs alone."""
        user = await read_committed(self.make_user)
        threads = await to_thread(lambda: [self.make_thread(user).pk for _ in range(10)])

        def broken(new: list) -> list:
            turns.persist_user_turn(new[0].thread_id, "ghost", "rolled back")
            raise IntegrityError("a concurrent insert")

        with mock.patch.object(starts, "store_new_turns", broken), self.assertLogs("chat.hops", "WARNING"):
            opened = await asyncio.gather(
                *(opening.aopen_turn(t, f"t-{t}", "hi", None, turns.ACTIVE_LEAF, runner=RUNNER) for t in threads)
            )
        self.assertTrue(all(o.created and o.answer is not None for o in opened))
        ghosts = await to_thread(lambda: Message.objects.filter(turn_id="ghost").count())
        self.assertEqual(ghosts, 0, "the batch's writes were rolled back")

    async def test_a_workers_burst_of_starts_reads_agents_and_opens_shells_in_one_hop(self) -> None:
        """A worker's starts: agents in one query and shells in one batch, each as open_answer alone gives it."""
        user = await read_committed(self.make_user)

        def asked() -> tuple[int, int]:
            thread = self.make_thread(user)
            return thread.pk, turns.persist_user_turn(thread.pk, "w", "question").id

        questions = await read_committed(lambda: [asked() for _ in range(25)])
        agent_reads = mock.patch.object(catalog.agent_store, "turn_agents_of", wraps=catalog.agent_store.turn_agents_of)
        with agent_reads as read, mock.patch.object(starts, "open_new_answers", wraps=starts.open_new_answers) as batch:
            opened = await asyncio.gather(*(opening.aopen_answer(t, "w", None, RUNNER, q) for t, q in questions))
        self.assertIn(read.call_count, (1, 2), "the first start's hop, then all that waited for it")
        self.assertEqual(read.call_count, batch.call_count, "agents and shells in the same hops")
        alone = await read_committed(lambda: catalog.turn_agent(questions[0][0]))
        for (thread_id, question), one in zip(questions, opened, strict=True):
            self.assertEqual((one.agent.name, one.agent.model), (alone.name, alone.model))
            self.assertTrue(one.answer.created)
            self.assertEqual([entry["content"] for entry in one.history or []][-1:], ["question"])
            shell = await read_committed(lambda: Message.objects.get(pk=one.answer.id))  # noqa: B023 (awaited at once)
            self.assertEqual((shell.thread_id, shell.parent_id, shell.status), (thread_id, question, "streaming"))
            self.assertEqual((shell.runner, shell.metadata["agent"]), (RUNNER, alone.name))
        again = await opening.aopen_answer(questions[0][0], "w", None, RUNNER, questions[0][1])
        self.assertFalse(again.answer.created, "a repeated start opens nothing")

    async def test_a_misconfigured_agent_fails_its_start_alone_with_nothing_stored(self) -> None:
        """In a worker's burst, a thread whose agent cannot be built fails alone; the others open their answers."""
        user = await read_committed(self.make_user)

        def asked(provider: str) -> tuple[int, int]:
            thread = self.make_thread(user)
            if provider != "local":
                thread.agent = Agent.objects.create(name=f"agent-{thread.pk}", provider=provider)
                thread.save()
            return thread.pk, turns.persist_user_turn(thread.pk, "w", "question").id

        questions = await read_committed(lambda: [asked(p) for p in ("local", "nope", "local")])
        opened = await asyncio.gather(
            *(opening.aopen_answer(t, "w", None, RUNNER, q) for t, q in questions), return_exceptions=True
        )
        self.assertIsInstance(opened[1], ValueError)
        self.assertTrue(all(o.answer.created for o in (opened[0], opened[2])))  # type: ignore[union-attr]
        shells = await read_committed(
            lambda: Message.objects.filter(thread_id=questions[1][0], role="assistant").count()
        )
        self.assertEqual(shells, 0)

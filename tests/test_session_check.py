"""A socket's session check: one query while nothing changed, Django's full answer as soon as anything did."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from unittest import mock

from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.base import ChatTestCase, ChatTransactionTestCase, read_committed
from web.consumers import asession_user_id
from web.sessions import SessionCheck


def log_in(user) -> str:
    """A database session logging `user` in, as django.contrib.auth.login() stores it; its key."""
    store = SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    assert store.session_key is not None
    return store.session_key


class SessionTestCase(ChatTestCase):
    def setUp(self) -> None:
        self.user = self.make_user()
        self.check = SessionCheck(log_in(self.user))


class SessionCheckTests(SessionTestCase):
    def test_an_unchanged_session_is_confirmed_by_one_query(self) -> None:
        self.assertEqual(self.check.current_user_id(), self.user.pk)
        with CaptureQueriesContext(connection) as queries:
            self.assertEqual(self.check.current_user_id(), self.user.pk)
        self.assertEqual(len(queries), 1)

    def test_the_first_check_reads_the_session_and_the_user_only(self) -> None:
        """Django's full check reads two rows, and what it read is the fingerprint: no third query for it."""
        with CaptureQueriesContext(connection) as queries:
            self.assertEqual(self.check.current_user_id(), self.user.pk)
        self.assertEqual(len(queries), 2, [q["sql"] for q in queries])
        self.assertEqual(self.check.seen, self.check._fingerprint())

    def test_a_failed_hash_check_logs_nobody_in_and_ends_the_session(self) -> None:
        """As Django's own get_user: a session whose hash no longer matches is flushed from the store."""
        get_user_model().objects.filter(pk=self.user.pk).update(password="md5$other$0123")
        self.assertIsNone(self.check.current_user_id())
        self.assertIsNone(self.check.seen)
        self.assertFalse(Session.objects.filter(session_key=self.check.session_key).exists())

    def test_a_deleted_session_logs_nobody_in(self) -> None:
        self.assertEqual(self.check.current_user_id(), self.user.pk)
        Session.objects.all().delete()
        self.assertIsNone(self.check.current_user_id())

    def test_an_expired_session_logs_nobody_in(self) -> None:
        self.assertEqual(self.check.current_user_id(), self.user.pk)
        Session.objects.update(expire_date=timezone.now() - timedelta(seconds=1))
        self.assertIsNone(self.check.current_user_id())

    def test_a_password_changed_without_any_signal_ends_the_session(self) -> None:
        """A queryset update sends no signal and no close event: the check itself must see the new hash."""
        self.assertEqual(self.check.current_user_id(), self.user.pk)
        get_user_model().objects.filter(pk=self.user.pk).update(password="md5$other$0123")
        self.assertIsNone(self.check.current_user_id())

    def test_a_deactivated_account_logs_nobody_in(self) -> None:
        self.assertEqual(self.check.current_user_id(), self.user.pk)
        get_user_model().objects.filter(pk=self.user.pk).update(is_active=False)
        self.assertIsNone(self.check.current_user_id())

    def test_a_session_rewritten_for_another_user_answers_that_user(self) -> None:
        """The fingerprint holds the session's data: a rewrite runs the full check again."""
        self.assertEqual(self.check.current_user_id(), self.user.pk)
        other = self.make_user("bob")
        store = SessionStore(self.check.session_key)
        store[SESSION_KEY] = str(other.pk)
        store[HASH_SESSION_KEY] = other.get_session_auth_hash()
        store.save()
        self.assertEqual(self.check.current_user_id(), other.pk)

    def test_no_session_key_logs_nobody_in(self) -> None:
        self.assertIsNone(SessionCheck(None).current_user_id())
        self.assertIsNone(SessionCheck("no-such-session").current_user_id())


class SessionChecksInOneHopTests(SessionTestCase):
    """current_user_ids(): the checks of one database hop, each answered as current_user_id() would answer it."""

    def test_unchanged_sessions_are_confirmed_by_two_queries_whatever_their_number(self) -> None:
        checks = [self.check] + [SessionCheck(log_in(self.make_user(f"user{i}"))) for i in range(5)]
        expected = [check.current_user_id() for check in checks]
        with CaptureQueriesContext(connection) as queries:
            self.assertEqual(SessionCheck.current_user_ids(checks), expected)
        self.assertEqual(len(queries), 2)

    def test_each_check_of_a_hop_gets_its_own_answer(self) -> None:
        """Ended sessions in the hop answer None, the others their user, a check never made runs in full."""
        users = [self.make_user(name) for name in ("deleted", "expired", "password", "inactive", "kept")]
        checks = {user.username: SessionCheck(log_in(user)) for user in users}
        for check in checks.values():
            check.current_user_id()
        Session.objects.filter(session_key=checks["deleted"].session_key).delete()
        Session.objects.filter(session_key=checks["expired"].session_key).update(
            expire_date=timezone.now() - timedelta(seconds=1)
        )
        get_user_model().objects.filter(username="password").update(password="md5$other$0123")
        get_user_model().objects.filter(username="inactive").update(is_active=False)
        fresh = SessionCheck(log_in(self.user))  # no full check made yet
        asked = [*checks.values(), fresh, SessionCheck(None), SessionCheck("no-such-session")]
        kept = next(user.pk for user in users if user.username == "kept")
        self.assertEqual(SessionCheck.current_user_ids(asked), [None, None, None, None, kept, self.user.pk, None, None])
        self.assertEqual(
            [check.current_user_id() for check in asked], [None, None, None, None, kept, self.user.pk, None, None]
        )


class SessionChecksOfOneHopTests(ChatTransactionTestCase):
    async def test_sockets_checking_at_once_share_one_batch(self) -> None:
        """The checks of sockets that receive a frame at the same moment go to the database together."""
        users = [await read_committed(lambda i=i: self.make_user(f"user{i}")) for i in range(8)]
        checks = [SessionCheck(await read_committed(lambda u=u: log_in(u))) for u in users]
        self.assertEqual(await asyncio.gather(*(asession_user_id(c) for c in checks)), [u.pk for u in users])
        with mock.patch.object(SessionCheck, "current_user_ids", wraps=SessionCheck.current_user_ids) as batch:
            answers = await asyncio.gather(*(asession_user_id(c) for c in checks))
        self.assertEqual(answers, [u.pk for u in users])
        self.assertIn(batch.call_count, (1, 2), "the first check's hop, then all that waited for it")


class SnapshotsOfOneHopTests(SessionTestCase):
    """snapshots_if_logged_in(): the snapshots of sockets opening in one hop, their session checks read together."""

    def test_each_socket_gets_its_snapshot_or_none_and_the_sessions_are_read_once(self) -> None:
        from django.db import transaction

        from chat.selectors import thread_snapshot
        from web.consumers import snapshots_if_logged_in

        users = [self.user] + [self.make_user(f"user{i}") for i in range(4)]
        checks = [self.check] + [SessionCheck(log_in(user)) for user in users[1:]]
        threads = [self.make_thread(user) for user in users]
        for check in checks:
            check.current_user_id()  # as the socket's first hop does
        Session.objects.filter(session_key=checks[2].session_key).delete()  # a logout meanwhile
        calls = [((check, user.pk, thread.pk), {}) for check, user, thread in zip(checks, users, threads, strict=True)]
        with CaptureQueriesContext(connection) as queries, transaction.atomic():
            outcomes = snapshots_if_logged_in(calls)
        expected = [(True, thread_snapshot(thread.pk)) for thread in threads]
        expected[2] = (True, None)
        self.assertEqual(outcomes, expected)
        # One read for the five, and Django's full check of the one whose session changed (one at a time: six).
        session_reads = [q["sql"] for q in queries if Session._meta.db_table in q["sql"]]
        self.assertEqual(len(session_reads), 2, session_reads)

    def test_a_snapshot_that_fails_fails_alone(self) -> None:
        from django.db import transaction

        from chat import selectors
        from web.consumers import snapshots_if_logged_in

        threads = [self.make_thread(self.user) for _ in range(3)]
        self.check.current_user_id()
        snapshot = selectors.thread_snapshot

        def failing_for_the_second(thread_id: int, *args: object) -> dict:
            if thread_id == threads[1].pk:
                raise ValueError("a snapshot that cannot be read")
            return snapshot(thread_id, *args)

        calls = [((self.check, self.user.pk, thread.pk), {}) for thread in threads]
        with mock.patch.object(selectors, "thread_snapshot", failing_for_the_second), transaction.atomic():
            outcomes = snapshots_if_logged_in(calls)
        self.assertEqual([ok for ok, _ in outcomes], [True, False, True])
        self.assertEqual(outcomes[2][1]["thread_id"], threads[2].pk)

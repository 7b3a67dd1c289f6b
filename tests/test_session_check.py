"""A socket's session check: one query while nothing changed, Django's full answer as soon as anything did."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.base import ChatTestCase
from web.sessions import SessionCheck


class SessionCheckTests(ChatTestCase):
    def setUp(self) -> None:
        self.user = self.make_user()
        self.check = SessionCheck(self.log_in(self.user))

    def log_in(self, user) -> str:
        store = SessionStore()
        store[SESSION_KEY] = str(user.pk)
        store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        store[HASH_SESSION_KEY] = user.get_session_auth_hash()
        store.create()
        assert store.session_key is not None
        return store.session_key

    def test_an_unchanged_session_is_confirmed_by_one_query(self) -> None:
        self.assertEqual(self.check.current_user_id(), self.user.pk)
        with CaptureQueriesContext(connection) as queries:
            self.assertEqual(self.check.current_user_id(), self.user.pk)
        self.assertEqual(len(queries), 1)

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

"""Sockets end with their session: a logout, a password change or a deactivated account closes them (4401).

Each socket joins a group of its session and one of its user. Django's
`user_logged_out` signal and saves of a user that change its password or
deactivate it send a close event to the group, after the commit, through the
channel layer, so the sockets of every process close at once. A socket also
checks its session before each frame it acts on: a session ended by any other
way (expiry, deleted row, a lost close event) refuses the frame and closes.
"""

from __future__ import annotations

import hashlib
import logging
from types import SimpleNamespace
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib import auth
from django.contrib.auth.signals import user_logged_out
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.contrib.sessions.models import Session
from django.db import connection, transaction
from django.db.models.signals import post_delete, post_save
from django.http import HttpRequest
from django.utils import timezone
from django.utils.module_loading import import_string

logger = logging.getLogger(__name__)

CLOSE_EVENT = "session.close"  # the consumer's handler: session_close()
_DB_ENGINE = "django.contrib.sessions.backends.db"


def session_group(session_key: str) -> str:
    """The group of one session's sockets (a digest: session keys stay out of the layer)."""
    return "session-" + hashlib.sha256(session_key.encode()).hexdigest()[:40]


def user_group(user_id: int) -> str:
    """The group of all of one user's sockets."""
    return f"user-{user_id}"


def cookie_session_key(scope: dict) -> str | None:
    """The session key a socket's cookie names (CookieMiddleware's scope["cookies"]), or None.

    The thread socket needs no session object: SessionCheck reads the
    session itself. Channels' SessionMiddleware in front of it had looked at
    its lazy session on every frame sent, for a save a socket never makes.
    """
    key = scope.get("cookies", {}).get(settings.SESSION_COOKIE_NAME)
    return key or None


def session_user(session_key: str | None) -> Any:
    """The user the session still logs in, or None when it ended (Django's check, read fresh from the store)."""
    if not session_key:
        return None
    store = import_string(settings.SESSION_ENGINE + ".SessionStore")(session_key)
    user = auth.get_user(SimpleNamespace(session=store))  # type: ignore[arg-type]
    return user if user.is_authenticated else None


class _ReadSessionStore(DatabaseSessionStore):
    """The database session store, given the session's data its caller already read (None: no live session).

    `load` is where a session engine reads its store; this one decodes what
    it was given, as the database store decodes its row.
    """

    # Django salts a store's data with its class name: this one reads what the database store wrote.
    key_salt = "django.contrib.sessions." + DatabaseSessionStore.__qualname__

    def __init__(self, session_key: str | None) -> None:
        super().__init__(session_key)
        self.read: str | None = None

    def load(self) -> dict:
        if self.read is None:
            self._session_key = None  # as the database store does for a missing or expired session
            return {}
        return self.decode(self.read)


def checked_session(session_key: str | None) -> tuple[Any, tuple | None]:
    """Django's full check of the session (session_user), and the fingerprint of the rows it read.

    On the database store the check reads the session row itself (one
    query) and the fingerprint is that row's data with the password and
    active flag of the user the check loaded: what the answer depended on,
    with no read of its own, so nothing can change between the check and
    its fingerprint. The fingerprint is None when nobody is logged in or the
    store is another.
    """
    if not session_key or settings.SESSION_ENGINE != _DB_ENGINE:
        return session_user(session_key), None
    store = _ReadSessionStore(session_key)
    if store.session_key:  # a key of a valid form
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT session_data FROM {Session._meta.db_table} WHERE session_key = %s AND expire_date > %s",
                [store.session_key, now],
            )
            row = cursor.fetchone()
        store.read = row[0] if row is not None else None
    user = auth.get_user(SimpleNamespace(session=store))  # type: ignore[arg-type]
    if not user.is_authenticated:
        return None, None
    return user, (store.read, user.password, bool(user.is_active))


def session_user_id(session_key: str | None) -> int | None:
    """The id of the user the session still logs in, or None when it ended (read fresh from the store)."""
    user = session_user(session_key)
    return None if user is None else user.pk


class SessionCheck:
    """Whether one socket's session still logs its user in, read fresh from the store for each frame.

    Django's full check (checked_session: decode the session, load the user,
    compare its password hash; two queries) runs when the session row, or the
    user's password or active flag, differ from what the last full check saw; else
    one query shows they are the same, and so is the answer. Sockets ask
    this before every frame they act on, so it must cost little: the checks
    of one database hop read their rows together (current_user_ids).
    """

    def __init__(self, session_key: str | None) -> None:
        self.session_key = session_key
        self.seen: tuple | None = None  # (session_data, password, is_active) at the last full check
        self.user_id: int | None = None

    def current_user_id(self) -> int | None:
        """The id of the user the session logs in now, or None when it ended."""
        if not self.session_key:
            return None
        return self._answer(self._fingerprint())

    @staticmethod
    def current_user_ids(checks: list[SessionCheck]) -> list[int | None]:
        """current_user_id() of each check, the rows of all their fast checks read in two queries."""
        fast = [check for check in checks if check._fast()]
        sessions: dict[str, str] = {}
        users: dict[int, tuple[str, bool]] = {}
        if fast:
            now = connection.ops.adapt_datetimefield_value(timezone.now())
            keys = list({check.session_key for check in fast})
            user_ids = list({check.user_id for check in fast})
            with connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT session_key, session_data FROM {Session._meta.db_table}"
                    f" WHERE session_key IN ({', '.join(['%s'] * len(keys))}) AND expire_date > %s",
                    [*keys, now],
                )
                sessions = dict(cursor.fetchall())
                cursor.execute(
                    f"SELECT id, password, is_active FROM {auth.get_user_model()._meta.db_table}"
                    f" WHERE id IN ({', '.join(['%s'] * len(user_ids))})",
                    user_ids,
                )
                users = {row[0]: (row[1], bool(row[2])) for row in cursor.fetchall()}
        answers: list[int | None] = []
        for check in checks:
            if not check.session_key:
                answers.append(None)
            elif not check._fast():
                answers.append(check._answer(None))
            else:
                data, user = sessions.get(check.session_key or ""), users.get(check.user_id or 0)
                answers.append(check._answer(None if data is None or user is None else (data, *user)))
        return answers

    def _answer(self, fingerprint: tuple | None) -> int | None:
        """The answer given what the fast check read now: the last one when it matches, else Django's in full."""
        if fingerprint is None or fingerprint != self.seen:
            user, self.seen = checked_session(self.session_key)
            self.user_id = None if user is None else user.pk
        return self.user_id

    def _fast(self) -> bool:
        """Whether a fingerprint can stand for the full check: a database session whose user was seen."""
        return bool(self.session_key) and settings.SESSION_ENGINE == _DB_ENGINE and self.user_id is not None

    def _fingerprint(self) -> tuple | None:
        """What the full check's answer depends on, read in one query; None off the database session store."""
        if not self._fast():
            return None
        user_model = auth.get_user_model()
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT s.session_data, u.password, u.is_active FROM {Session._meta.db_table} s,"
                f" {user_model._meta.db_table} u WHERE s.session_key = %s AND s.expire_date > %s AND u.id = %s",
                [self.session_key, connection.ops.adapt_datetimefield_value(timezone.now()), self.user_id],
            )
            row = cursor.fetchone()
        return (row[0], row[1], bool(row[2])) if row is not None else None


def check_sessions_in_one_hop(calls: list[tuple[tuple, dict]]) -> list[tuple[bool, Any]]:
    """The SessionCheck.current_user_id() calls of one database hop (chat.hops) as one current_user_ids()."""
    return [(True, user_id) for user_id in SessionCheck.current_user_ids([args[0] for args, _ in calls])]


def close_group(group: str) -> None:
    """Tell every socket of `group`, in every process, to close 4401, once the current transaction commits."""

    def send() -> None:
        try:
            async_to_sync(get_channel_layer().group_send)(group, {"type": CLOSE_EVENT})
        except Exception:
            logger.exception("could not close the sockets of %s", group)

    transaction.on_commit(send)


def _logged_out(sender: Any, request: HttpRequest, user: Any, **kwargs: Any) -> None:
    if request.session.session_key:
        close_group(session_group(request.session.session_key))


def _user_saved(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    # AbstractBaseUser keeps the new raw password in `_password` until its save returns.
    if not created and (getattr(instance, "_password", None) is not None or not instance.is_active):
        close_group(user_group(instance.pk))


def _user_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    close_group(user_group(instance.pk))


def connect_signals() -> None:
    """Register the receivers (called once, from the app's ready())."""
    user_model = auth.get_user_model()
    user_logged_out.connect(_logged_out, dispatch_uid="web.sessions.logged_out")
    post_save.connect(_user_saved, sender=user_model, dispatch_uid="web.sessions.user_saved")
    post_delete.connect(_user_deleted, sender=user_model, dispatch_uid="web.sessions.user_deleted")

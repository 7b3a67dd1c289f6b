"""Base test classes with the domain helpers every test file shares."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from asgiref.sync import SyncToAsync
from django.contrib.auth import get_user_model
from django.db import connections
from django.test import TestCase, TransactionTestCase, override_settings

from agents.registry import registry
from chat import turns
from chat.models import Message, Thread

PASSWORD = "test-password-1"
TURN_TIMEOUT = 60


async def finish_turn(thread_id: int, turn_id: str, timeout: float = TURN_TIMEOUT) -> None:
    """Wait for the task of a turn that runs in this process, so that nothing of it outlives the test.

    Shielded: a timeout fails the test without cancelling the turn.
    """
    turn = registry.get(thread_id, turn_id)
    if turn is not None and turn.task is not None:
        await asyncio.wait_for(asyncio.shield(turn.task), timeout)


class ChatHelpers:
    """Domain helpers: users, threads and the full text of a message."""

    def make_user(self, name: str = "alice", password: str = PASSWORD, **fields):
        """A user who can log in with `password`."""
        return get_user_model().objects.create_user(username=name, password=password, **fields)

    def make_thread(self, user, title: str = "A thread") -> Thread:
        return Thread.objects.create(owner=user, title=title)

    def full_text(self, message_id: int) -> str:
        """What a reader must see: the content followed by the streaming pieces in order."""
        message = Message.objects.get(pk=message_id)
        return message.content + "".join(message.chunks.order_by("start").values_list("text", flat=True))


# Password hashing at production strength costs ~1.6 s per user and per login.
FAST_HASHING = override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"])


@FAST_HASHING
class ChatTestCase(ChatHelpers, TestCase):
    """Each test runs in a transaction rolled back at the end."""


@FAST_HASHING
class ChatTransactionTestCase(ChatHelpers, TransactionTestCase):
    """Real commits, for tests with other threads, processes or connections; tables are flushed after each test."""

    def _post_teardown(self) -> None:
        # Async tests leave a connection open in asgiref's database thread;
        # close it before the flush, or PostgreSQL teardown waits on it.
        SyncToAsync.single_thread_executor.submit(connections.close_all).result()
        turns.APPEND_THREAD.submit(connections.close_all).result()  # the delta writer's own connection
        super()._post_teardown()


async def to_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """asyncio.to_thread(fn, ...), closing the thread's database connections after it.

    A connection left open in a thread of the loop's executor outlives the
    test: PostgreSQL then refuses to drop the test database at the end.
    """

    def in_own_connection() -> Any:
        try:
            return fn(*args, **kwargs)
        finally:
            connections.close_all()

    return await asyncio.to_thread(in_own_connection)


async def read_committed(read: Callable[[], Any]) -> Any:
    """Run `read` in a thread with its own database connection: it sees only committed rows."""
    return await to_thread(read)


def run_concurrently(functions: list[Callable[[], Any]], timeout: float = 120) -> list[Any]:
    """Run each function in its own thread, all released at once; return results (or the exceptions raised) in order.

    Each thread uses its own database connection and closes it when done.
    """
    barrier = threading.Barrier(len(functions))
    results: list[Any] = [None] * len(functions)

    def worker(index: int, function: Callable[[], Any]) -> None:
        try:
            barrier.wait(timeout)
            results[index] = function()
        except BaseException as exc:  # handed back to the test
            results[index] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(i, f), daemon=True) for i, f in enumerate(functions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        if thread.is_alive():
            raise AssertionError(f"a concurrent worker did not finish within {timeout}s")
    return results

"""The per-user limit on user messages (agents.ratelimit)."""

from __future__ import annotations

import asyncio
import uuid

from django.test import SimpleTestCase, override_settings
from redis import asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from agents import ratelimit
from tests.services import free_port, start_redis


def new_user_id() -> int:
    """A user id no other test (or earlier run against a shared Redis) has counted."""
    return uuid.uuid4().int % 10**15


@override_settings(CHAT_MESSAGES_PER_MINUTE=3)
class UserMessageRateTests(SimpleTestCase):
    def setUp(self) -> None:
        ratelimit.reset()
        self.addCleanup(ratelimit.reset)

    async def test_allows_the_limit_then_asks_to_wait(self) -> None:
        """CHAT_MESSAGES_PER_MINUTE messages pass; the next gets a retry_after between 1 and 60 seconds."""
        user_id = new_user_id()
        for _ in range(3):
            self.assertIsNone(await ratelimit.check_user_message(user_id))
        retry_after = await ratelimit.check_user_message(user_id)
        self.assertIsInstance(retry_after, int)
        self.assertGreaterEqual(retry_after, 1)
        self.assertLessEqual(retry_after, 60)

    async def test_refused_messages_stay_refused(self) -> None:
        """Further messages within the minute are refused too."""
        user_id = new_user_id()
        for _ in range(3):
            await ratelimit.check_user_message(user_id)
        for _ in range(3):
            self.assertIsNotNone(await ratelimit.check_user_message(user_id))

    async def test_limit_is_per_user(self) -> None:
        """One user at the limit does not limit another."""
        limited, other = new_user_id(), new_user_id()
        for _ in range(3):
            await ratelimit.check_user_message(limited)
        self.assertIsNotNone(await ratelimit.check_user_message(limited))
        for _ in range(3):
            self.assertIsNone(await ratelimit.check_user_message(other))
        self.assertIsNotNone(await ratelimit.check_user_message(other))

    @override_settings(CHAT_MESSAGES_PER_MINUTE=5)
    async def test_limit_comes_from_settings(self) -> None:
        """The number allowed is CHAT_MESSAGES_PER_MINUTE."""
        user_id = new_user_id()
        results = [await ratelimit.check_user_message(user_id) for _ in range(6)]
        self.assertEqual(results[:5], [None] * 5)
        self.assertIsNotNone(results[5])


class MemoryWindowTests(SimpleTestCase):
    """The window a process keeps without Redis, on a clock the test gives."""

    def test_the_wait_ends_when_the_oldest_message_leaves_the_window(self) -> None:
        """At the limit, the answer is when the oldest hit is a minute old; then one more message passes."""
        window = ratelimit.MemoryWindow()
        for now in (100.0, 110.0, 120.0):
            self.assertIsNone(window.hit("user", 3, 60, now))
        self.assertEqual(window.hit("user", 3, 60, 130.0), 160.0)
        self.assertEqual(window.hit("user", 3, 60, 159.9), 160.0)
        self.assertIsNone(window.hit("user", 3, 60, 160.0))
        self.assertEqual(window.hit("user", 3, 60, 161.0), 170.0)

    def test_users_gone_quiet_are_forgotten(self) -> None:
        """Keys with no hit in the last minute are dropped, so the window does not grow with every user ever seen."""
        window = ratelimit.MemoryWindow()
        for user in range(1000):
            window.hit(f"user-{user}", 3, 60, 100.0 + user / 1000)
        self.assertEqual(len(window), 1000)
        window.hit("late", 3, 60, 161.0)
        self.assertEqual(len(window), 1)

    def test_a_limit_of_zero_refuses_everything(self) -> None:
        window = ratelimit.MemoryWindow()
        self.assertEqual(window.hit("user", 0, 60, 100.0), 160.0)


class RedisRateTests(SimpleTestCase):
    """The limit kept in Redis (a cluster's), where a burst of checks goes to Redis together."""

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.redis_url, stop = start_redis()
        cls.addClassCleanup(stop)

    def setUp(self) -> None:
        self.enterContext(override_settings(REDIS_URL=self.redis_url, CHAT_MESSAGES_PER_MINUTE=3))
        ratelimit.reset()
        self.addCleanup(ratelimit.reset)

    async def test_a_burst_of_one_users_messages_lets_the_limit_through(self) -> None:
        """Ten messages of one user checked at once: three pass, seven get a retry_after."""
        user_id = new_user_id()
        results = await asyncio.gather(*(ratelimit.check_user_message(user_id) for _ in range(10)))
        self.assertEqual(results.count(None), 3)
        for retry_after in (r for r in results if r is not None):
            self.assertTrue(1 <= retry_after <= 60, retry_after)

    async def test_checks_made_one_by_one_count_with_a_burst(self) -> None:
        """Counts made in a burst and one at a time are the same count."""
        user_id = new_user_id()
        self.assertEqual(await asyncio.gather(*(ratelimit.check_user_message(user_id) for _ in range(2))), [None] * 2)
        self.assertIsNone(await ratelimit.check_user_message(user_id))
        self.assertIsNotNone(await ratelimit.check_user_message(user_id))

    async def test_a_burst_of_many_users_takes_a_few_connections_not_one_each(self) -> None:
        """200 users' messages checked at once all pass, over a handful of Redis connections.

        One command per check had opened a pool connection per check, and a
        burst of turn starts waited for them.
        """
        users = [new_user_id() for _ in range(200)]
        results = await asyncio.gather(*(ratelimit.check_user_message(user_id) for user_id in users))
        self.assertEqual(results, [None] * 200)
        client = aioredis.from_url(self.redis_url)
        try:
            clients = await client.client_list()
        finally:
            await client.aclose()
        self.assertLessEqual(len(clients), 5, clients)

    async def test_redis_away_fails_the_check_and_the_next_one_works(self) -> None:
        """With Redis unreachable a check raises (the socket answers server_error); once back, checks count again."""
        ratelimit.reset()
        with override_settings(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"):
            with self.assertRaises(RedisConnectionError):
                await ratelimit.check_user_message(new_user_id())
            ratelimit.reset()
        self.assertIsNone(await ratelimit.check_user_message(new_user_id()))

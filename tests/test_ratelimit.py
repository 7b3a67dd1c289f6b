"""The per-user limit on user messages (agents.ratelimit)."""

from __future__ import annotations

import uuid

from django.test import SimpleTestCase, override_settings

from agents import ratelimit


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

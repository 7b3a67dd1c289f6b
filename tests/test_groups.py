"""agents.groups on channels-redis: a socket's groups joined and left in one round trip, as group_add would."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from unittest import mock

from channels_redis.core import RedisChannelLayer
from django.test import SimpleTestCase
from redis.asyncio.client import Pipeline

from agents import groups
from tests.services import start_redis

NAMES = ["user-7", "session-" + "a" * 40]  # the two groups a socket joins as it opens


class RedisGroupsTests(SimpleTestCase):
    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.redis_url, stop = start_redis()
        cls.addClassCleanup(stop)

    @contextlib.asynccontextmanager
    async def channel(self) -> AsyncIterator[tuple[RedisChannelLayer, str]]:
        layer = RedisChannelLayer(hosts=[self.redis_url], group_expiry=900)
        try:
            yield layer, await layer.new_channel()
        finally:
            await layer.flush()
            await layer.close_pools()

    async def test_join_adds_the_channel_to_every_group_with_its_expiry_in_one_round_trip(self) -> None:
        async with self.channel() as (layer, channel):
            execute, sent = Pipeline.execute, []

            async def counted(pipeline: Pipeline, *args: object, **kwargs: object) -> list:
                sent.append(len(pipeline.command_stack))
                return await execute(pipeline, *args, **kwargs)

            with mock.patch.object(Pipeline, "execute", counted):
                await groups.join(layer, NAMES, channel)
            self.assertEqual(sent, [4])  # one round trip: ZADD and EXPIRE for each group
            for name in NAMES:
                self.assertTrue(await groups.is_member(layer, name, channel))
                ttl = await layer.connection(0).ttl(layer._group_key(name))
                self.assertTrue(890 < ttl <= 900, ttl)

    async def test_a_joined_channel_hears_group_sends_and_stops_once_it_left(self) -> None:
        async with self.channel() as (layer, channel):
            await groups.join(layer, NAMES, channel)
            await layer.group_send(NAMES[1], {"type": "session.close"})
            self.assertEqual(await layer.receive(channel), {"type": "session.close"})
            await groups.leave(layer, NAMES, channel)
            for name in NAMES:
                self.assertFalse(await groups.is_member(layer, name, channel))

"""agents.fanout: events of other processes reach this process's sockets once, and lost ones resync them."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from unittest import mock

from channels.layers import BaseChannelLayer, InMemoryChannelLayer
from channels_redis.pubsub import RedisPubSubChannelLayer
from django.test import SimpleTestCase, override_settings
from redis import asyncio as aioredis

from agents import fanout, groups
from tests.services import start_redis

TIMEOUT = 5.0


class RemoteLayer(BaseChannelLayer):
    """An in-memory layer that passes for another process's Redis, and can go deaf (it drops what is sent)."""

    shared = InMemoryChannelLayer()
    deaf = False
    dropped = 0

    extensions = ["groups"]

    async def send(self, channel: str, message: dict) -> None:
        if RemoteLayer.deaf:
            RemoteLayer.dropped += 1
            return
        await self.shared.send(channel, message)

    async def group_send(self, group: str, message: dict) -> None:
        if not RemoteLayer.deaf:
            await self.shared.group_send(group, message)

    async def receive(self, channel: str) -> dict:
        return await self.shared.receive(channel)

    async def new_channel(self, prefix: str = "specific.") -> str:
        return await self.shared.new_channel(prefix)

    async def group_add(self, group: str, channel: str) -> None:
        await self.shared.group_add(group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        await self.shared.group_discard(group, channel)


class Socket:
    """A subscriber that records what it was handed."""

    def __init__(self) -> None:
        self.frames: list[dict] = []
        self.resyncs = 0

    def deliver(self, frame: dict) -> None:
        self.frames.append(frame)

    def resync(self) -> None:
        self.resyncs += 1


async def until(condition, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


LAYERS = {
    "default": {"BACKEND": "channels.layers.InMemoryChannelLayer"},
    "events": {"BACKEND": "tests.test_fanout.RemoteLayer"},
}


@override_settings(CHANNEL_LAYERS=LAYERS, EVENTS_CHANNEL_LAYER="events", SOCKET_REJOIN_SECONDS=0.05)
class FanoutTests(SimpleTestCase):
    def setUp(self) -> None:
        RemoteLayer.shared = InMemoryChannelLayer()
        RemoteLayer.deaf, RemoteLayer.dropped = False, 0

    async def asyncTearDown(self) -> None:
        fanout._subscription().stop()

    async def test_another_process_event_reaches_each_socket_once_and_own_events_are_skipped(self) -> None:
        """An event published by another process reaches each socket here once; this process's own is not doubled."""
        one, two = Socket(), Socket()
        await fanout.join(900_007, one)
        await fanout.join(900_007, two)
        frame = {"type": "message_delta", "turn_id": "t", "message_id": 1, "data": {"offset": 0, "delta": "a"}}
        group = fanout.shard_group(900_007)
        other = {"type": fanout.EVENT_TYPE, "thread_id": 900_007, "frame": frame, "origin": "elsewhere", "seq": 1}
        await RemoteLayer.shared.group_send(group, {"type": fanout.EVENTS_TYPE, "events": [other]})
        await fanout.publish(900_007, frame, 1)  # this process's: handed over by broadcast, skipped when it comes back
        await until(lambda: one.frames and two.frames, "the other process's event")
        await asyncio.sleep(0.1)  # let this process's own event come back, were it not skipped
        self.assertEqual((one.frames, two.frames), ([frame], [frame]))
        await fanout.leave(900_007, one)
        await fanout.leave(900_007, two)

    async def test_a_deaf_subscription_resyncs_every_socket_once_it_hears_again(self) -> None:
        """While nothing sent here arrives, nothing resyncs; once a probe is heard again, every socket does."""
        here, there = Socket(), Socket()
        await fanout.join(900_001, here)
        await fanout.join(900_002, there)
        RemoteLayer.deaf = True
        await until(lambda: RemoteLayer.dropped >= 2, "a probe lost")
        self.assertEqual((here.resyncs, there.resyncs), (0, 0))
        RemoteLayer.deaf = False
        await until(lambda: here.resyncs and there.resyncs, "the resync")
        self.assertEqual((here.resyncs, there.resyncs), (1, 1))
        await fanout.leave(900_001, here)
        await fanout.leave(900_002, there)

    async def test_the_last_socket_of_a_shard_unsubscribes_the_process(self) -> None:
        """Once no socket of any thread of the shard is left here, its events no longer come to this process."""
        one, other = Socket(), Socket()
        # This process alone, without the sockets earlier tests left registered.
        self.enterContext(mock.patch.object(fanout, "_sockets", {}))
        self.enterContext(mock.patch.object(fanout, "_shard_threads", Counter()))
        thread_id = 900_003
        same_shard = thread_id + fanout.SHARDS
        group = fanout.shard_group(thread_id)
        await fanout.join(thread_id, one)
        await fanout.join(same_shard, other)
        await fanout.leave(thread_id, one)
        self.assertIn(group, fanout._subscription().shards, "a thread of the shard still has a socket here")
        await fanout.leave(same_shard, other)
        self.assertNotIn(group, fanout._subscription().shards)
        self.assertFalse(RemoteLayer.shared.groups.get(group))

    async def test_events_of_a_shards_other_threads_are_skipped(self) -> None:
        """A shard's message carries threads this process holds no socket of: only its own reach its sockets."""
        socket = Socket()
        await fanout.join(900_004, socket)
        stranger = other_process_event(900_004 + fanout.SHARDS, 1)
        mine = other_process_event(900_004, 1)
        message = {"type": fanout.EVENTS_TYPE, "events": [stranger, mine, other_process_event(900_004, 2)]}
        await RemoteLayer.shared.group_send(fanout.shard_group(900_004), message)
        await until(lambda: len(socket.frames) == 2, "this process's thread's events")
        self.assertEqual([f["data"]["seq"] for f in socket.frames], [1, 2])
        self.assertEqual(socket.resyncs, 0)
        await fanout.leave(900_004, socket)


def other_process_event(thread_id: int, seq: int) -> dict:
    """A message_delta of turn `t{thread_id}` as another process's fan-out sends it, numbered `seq`."""
    frame = {"type": "message_delta", "turn_id": f"t{thread_id}", "message_id": thread_id, "data": {"seq": seq}}
    return {"type": fanout.EVENT_TYPE, "thread_id": thread_id, "frame": frame, "origin": "elsewhere", "seq": seq}


class RedisFanoutTests(SimpleTestCase):
    """Two processes' fan-outs on one Redis: this process's subscription, and another's sender on its own layer."""

    THREADS = (900_011, 900_012, 900_013)
    BURST = 200  # events of each thread

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.redis_url, stop = start_redis()
        cls.addClassCleanup(stop)

    def setUp(self) -> None:
        events = {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer", "CONFIG": {"hosts": [self.redis_url]}}
        layers = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}, "events": events}
        self.enterContext(override_settings(CHANNEL_LAYERS=layers, EVENTS_CHANNEL_LAYER="events"))

    @contextlib.asynccontextmanager
    async def two_processes(self) -> AsyncIterator[None]:
        """This process's sockets of THREADS, subscribed; `self.other`: another process's fan-out on its own link."""
        self.sockets = {thread_id: Socket() for thread_id in self.THREADS}
        for thread_id, socket in self.sockets.items():
            await fanout.join(thread_id, socket)
        other_layer = RedisPubSubChannelLayer(hosts=[self.redis_url])
        self.other = fanout.Subscription(other_layer)
        try:
            await self.until_subscribed()
            yield
        finally:
            self.other.stop()
            await other_layer.flush()
            for thread_id, socket in self.sockets.items():
                await fanout.leave(thread_id, socket)
            here = fanout._subscription()
            here.stop()
            await here.layer.flush()

    async def until_subscribed(self) -> None:
        """Wait until Redis lists this process's subscription to each thread's shard (SUBSCRIBE is not answered)."""
        layer = fanout.events_layer()._get_layer()
        channels = [layer._get_group_channel_name(fanout.shard_group(thread_id)) for thread_id in self.THREADS]
        client = aioredis.from_url(self.redis_url)
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + TIMEOUT
            while not all(count for _, count in await client.pubsub_numsub(*channels)):
                if loop.time() > deadline:
                    raise AssertionError("timed out waiting for the subscriptions")
                await asyncio.sleep(0.01)
        finally:
            await client.aclose()

    async def send_burst(self, skip: tuple[int, int] | None = None) -> mock.MagicMock:
        """Queue BURST events of each thread, interleaved, at once, but `skip` (thread, seq); return the spy."""
        spy = mock.AsyncMock(wraps=groups.send_many)
        with mock.patch.object(groups, "send_many", spy):
            for seq in range(1, self.BURST + 1):
                for thread_id in self.THREADS:
                    if (thread_id, seq) != skip:
                        await self.other.send(thread_id, other_process_event(thread_id, seq))
            expected = len(self.THREADS) * self.BURST - (skip is not None)
            await until(lambda: sum(len(s.frames) for s in self.sockets.values()) == expected, "every event")
        return spy

    async def test_a_burst_of_several_threads_arrives_in_order_in_one_round_trip(self) -> None:
        """Events queued together go to Redis in one batch, a message per shard, and reach each thread's socket
        in order, none resynced."""
        async with self.two_processes():
            spy = await self.send_burst()
        self.assertEqual(spy.await_count, 1)
        batch = spy.await_args.args[1]
        self.assertEqual(sorted(group for group, _ in batch), sorted(fanout.shard_group(t) for t in self.THREADS))
        self.assertEqual(sum(len(message["events"]) for _, message in batch), len(self.THREADS) * self.BURST)
        for socket in self.sockets.values():
            self.assertEqual([frame["data"]["seq"] for frame in socket.frames], list(range(1, self.BURST + 1)))
            self.assertEqual(socket.resyncs, 0)

    async def test_an_event_missing_from_a_batch_resyncs_its_thread_only(self) -> None:
        """A sequence gap within a batched burst makes that thread's sockets resync once; the others' do not."""
        gap = self.THREADS[1]
        async with self.two_processes():
            await self.send_burst(skip=(gap, 50))
        self.assertEqual({t: s.resyncs for t, s in self.sockets.items()}, {t: int(t == gap) for t in self.THREADS})
        self.assertEqual(len(self.sockets[gap].frames), self.BURST - 1)

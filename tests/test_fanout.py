"""agents.fanout: events of other processes reach this process's sockets once, and lost ones resync them."""

from __future__ import annotations

import asyncio

from channels.layers import BaseChannelLayer, InMemoryChannelLayer
from django.test import SimpleTestCase, override_settings

from agents import fanout

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
        group = fanout.thread_group(900_007)
        other = {"type": fanout.EVENT_TYPE, "thread_id": 900_007, "frame": frame, "origin": "elsewhere", "seq": 1}
        await RemoteLayer.shared.group_send(group, other)
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

    async def test_the_last_socket_of_a_thread_unsubscribes_the_process(self) -> None:
        """Once no socket of the thread is left here, its events no longer come to this process."""
        socket = Socket()
        await fanout.join(900_003, socket)
        await fanout.leave(900_003, socket)
        self.assertNotIn(900_003, fanout._subscription().threads)
        self.assertFalse(RemoteLayer.shared.groups.get(fanout.thread_group(900_003)))

"""Where turn events go: straight to this process's sockets of the thread, and once to each other process.

A socket registers here for its thread (`join`) and gets every event of it
through its `deliver`, a call in this process: no channel-layer message and
no database hop per socket. Events also go to the events layer
(settings.EVENTS_CHANNEL_LAYER, Redis pub/sub in a cluster), to which each
process holding sockets of a thread subscribes its own channel once; such
a process hands each event it receives to its sockets, and skips the ones
it made itself. Over Redis, a thread's events go to its shard's group (one
of SHARDS): what a process sends in one round trip (a delta writer's
commit, say) is one message per shard, not one per thread, and a receiving
process takes the events of its own threads out of it. One message per
thread had cost each web process a pub/sub message to parse, decode and
queue per event: 2,200 a second each at 442 streams.

A layer may lose events (a Redis restart, a full channel). Events of a turn
carry a sequence number per sending process: a gap makes this process's
sockets of the thread send themselves a fresh snapshot (`resync`). A probe
sent to this process's own channel every SOCKET_REJOIN_SECONDS finds a
subscription that went deaf; once it hears again, every socket here
resyncs. Within a stream, `agents.resume.SocketFeed` fills text gaps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import Counter, OrderedDict, deque
from typing import Protocol

from channels.layers import BaseChannelLayer, InMemoryChannelLayer, get_channel_layer
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from . import groups

logger = logging.getLogger(__name__)

EVENT_TYPE = "thread.event"
EVENTS_TYPE = "thread.events"  # events of one shard's threads, in the order they were sent
SWITCHED_TYPE = "thread.switched"  # the thread's active path changed: resync
PROBE_TYPE = "fanout.probe"
ORIGIN = uuid.uuid4().hex  # tags this process's events, so that it skips its own when they come back
SEEN_LIMIT = 10_000  # (thread, turn, origin) sequences remembered
RETRY_SECONDS = 1.0
OUTBOX = 10_000  # events waiting for the layer in this process, at most
BATCH = 1_000  # events sent to the layer in one round trip, at most
SHARDS = 16  # groups a remote layer's events are spread over (see shard_group)


class Subscriber(Protocol):
    def deliver(self, frame: dict) -> None:
        """Take one event of the thread; must not block."""

    def resync(self) -> None:
        """Events may have been lost: send a fresh snapshot and resume from it; must not block."""


def thread_group(thread_id: int) -> str:
    """The group of the thread's events on an in-memory layer (this process's own listeners, in tests)."""
    return f"thread-{thread_id}"


def shard_group(thread_id: int) -> str:
    """The group of the thread's events on a remote layer, shared with the other threads of its shard.

    Fewer shards mean fewer messages per round trip but more events a
    process receives for threads it holds no socket of.
    """
    return f"thread-events-{thread_id % SHARDS}"


_sockets: dict[int, set[Subscriber]] = {}
_shard_threads: Counter[str] = Counter()  # per shard group: the threads this process holds sockets of


def deliver(thread_id: int, frame: dict) -> None:
    """Hand an event to every socket of the thread in this process."""
    for socket in list(_sockets.get(thread_id, ())):
        socket.deliver(frame)


def resync(thread_id: int | None = None) -> None:
    """Ask this process's sockets of the thread (of every thread for None) for a fresh snapshot."""
    threads = list(_sockets) if thread_id is None else [thread_id]
    for thread in threads:
        for socket in list(_sockets.get(thread, ())):
            socket.resync()


def events_layer() -> BaseChannelLayer | None:
    alias = settings.EVENTS_CHANNEL_LAYER
    return get_channel_layer(alias) if alias in settings.CHANNEL_LAYERS else None


async def publish(thread_id: int, frame: dict, seq: int | None = None) -> None:
    """Send an event of this process to the thread's group on the events layer (see Subscription.send)."""
    message = {"type": EVENT_TYPE, "thread_id": thread_id, "frame": frame, "origin": ORIGIN, "seq": seq}
    await _subscription().send(thread_id, message)


async def publish_switch(thread_id: int) -> None:
    """Tell every process's sockets of the thread to resync; this process's at once."""
    resync(thread_id)
    message = {"type": SWITCHED_TYPE, "thread_id": thread_id, "origin": ORIGIN}
    await _subscription().send(thread_id, message)


async def join(thread_id: int, socket: Subscriber) -> None:
    """Send the thread's events to `socket` from now on; the first one subscribes this process to the thread."""
    if thread_id not in _sockets:
        _sockets[thread_id] = set()
        _shard_threads[shard_group(thread_id)] += 1
    _sockets[thread_id].add(socket)
    await _subscription().reconcile(thread_id)


async def leave(thread_id: int, socket: Subscriber) -> None:
    """Stop sending to `socket`; the last one unsubscribes this process from the thread."""
    sockets = _sockets.get(thread_id)
    if sockets is not None:
        sockets.discard(socket)
        if not sockets:
            del _sockets[thread_id]
            _shard_threads[shard_group(thread_id)] -= 1
    await _subscription().reconcile(thread_id)


class Subscription:
    """This process's channel on the events layer: its thread groups, its listener and its probe."""

    def __init__(self, layer: BaseChannelLayer | None) -> None:
        self.layer = layer
        self.loop = asyncio.get_running_loop()
        self.lock = asyncio.Lock()
        self.channel = ""
        self.shards: set[str] = set()  # the shard groups this channel is in
        self.seen: OrderedDict[tuple[int, str, str], int] = OrderedDict()
        self.tasks: list[asyncio.Task] = []
        self.heard = asyncio.Event()
        self.outbox: deque[tuple[str, dict]] = deque()  # (shard group, message)
        self.has_mail = asyncio.Event()
        self.sender: asyncio.Task | None = None
        self.dropped = 0

    async def send(self, thread_id: int, message: dict) -> None:
        """Send to the thread's group: at once on an in-memory layer (if anyone is in it), else through the sender.

        The sender sends in order and alone, so the delta writer never waits
        for Redis: a Redis outage delays other processes' events, not the
        commits. What gathers while it waits for Redis goes in its next round
        trip, so the number of round trips stays flat however many streams
        run. Past OUTBOX messages waiting, the oldest go (receivers see the
        gap and resync).
        """
        if self.layer is None:
            return
        if not self.remote:
            # Only this process's own channels can be in the group (tests
            # listen so); an empty group is skipped: the in-memory layer's
            # group_send sweeps every channel for expired messages first.
            if await groups.has_members(self.layer, thread_group(thread_id)):
                await self.layer.group_send(thread_group(thread_id), message)
            return
        if len(self.outbox) >= OUTBOX:
            self.outbox.popleft()
            self.dropped += 1
        self.outbox.append((shard_group(thread_id), message))
        self.has_mail.set()
        if self.sender is None or self.sender.done():
            self.sender = self.loop.create_task(self._send_all(), name="events-sender")

    async def _send_all(self) -> None:
        assert self.layer is not None
        failing = False
        while True:
            await self.has_mail.wait()
            self.has_mail.clear()
            while self.outbox:
                # Everything queued while the last batch was on its way goes
                # in one round trip (groups.send_many), one message per shard,
                # each shard's events in order.
                by_shard: dict[str, list[dict]] = {}
                for _ in range(min(len(self.outbox), BATCH)):
                    group, message = self.outbox.popleft()
                    by_shard.setdefault(group, []).append(message)
                batch = [(group, {"type": EVENTS_TYPE, "events": events}) for group, events in by_shard.items()]
                try:
                    await groups.send_many(self.layer, batch)
                    if failing:
                        failing = False
                        logger.warning("events layer reachable again")
                except Exception:
                    if not failing:  # once per outage, not once per event
                        logger.exception("events layer unreachable: events to other processes are lost")
                    failing = True

    @property
    def remote(self) -> bool:
        """Whether other processes can send here: an in-memory layer reaches this process only."""
        return self.layer is not None and not isinstance(self.layer, InMemoryChannelLayer)

    async def reconcile(self, thread_id: int) -> None:
        """Subscribe to the thread's shard while this process holds sockets of a thread of it, and only then."""
        if not self.remote:
            return
        assert self.layer is not None
        async with self.lock:
            if not self.channel:
                self.channel = await self.layer.new_channel()
                self.tasks = [self.loop.create_task(self._listen()), self.loop.create_task(self._probe())]
            group = shard_group(thread_id)
            wanted, held = _shard_threads[group] > 0, group in self.shards
            if wanted and not held:
                await self.layer.group_add(group, self.channel)
                self.shards.add(group)
            elif held and not wanted:
                self.shards.discard(group)
                await self.layer.group_discard(group, self.channel)

    async def _listen(self) -> None:
        assert self.layer is not None
        while True:
            try:
                message = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("events channel %s failed; listening again", self.channel)
                await asyncio.sleep(RETRY_SECONDS)
                continue
            self.received(message)

    def received(self, message: dict) -> None:
        """An event that came through the layer: hand it to the sockets here, or resync them after a gap."""
        kind = message.get("type")
        if kind == PROBE_TYPE:
            self.heard.set()
            return
        if kind == EVENTS_TYPE:
            for event in message.get("events", ()):
                self.received(event)
            return
        if message.get("origin") == ORIGIN or message.get("thread_id") not in _sockets:
            return  # this process's own, or of a thread of the shard it holds no socket of
        thread_id = message["thread_id"]
        if kind == SWITCHED_TYPE:
            resync(thread_id)
            return
        frame, seq = message["frame"], message.get("seq")
        if seq is not None and frame.get("turn_id"):
            key = (thread_id, frame["turn_id"], message["origin"])
            last = self.seen.pop(key, None)
            if last is not None and seq != last + 1:
                logger.warning("thread %s lost %d event(s) of turn %s: resync", thread_id, seq - last - 1, key[1])
                resync(thread_id)
            if frame["type"] != "agent_completed":
                self.seen[key] = seq
                while len(self.seen) > SEEN_LIMIT:
                    self.seen.popitem(last=False)
        deliver(thread_id, frame)

    async def _probe(self) -> None:
        """Send this channel a probe now and then; when one is heard after a silence, resync every socket here."""
        assert self.layer is not None
        deaf = False
        while True:
            interval = settings.SOCKET_REJOIN_SECONDS
            await asyncio.sleep(interval)
            self.heard.clear()
            try:
                await self.layer.send(self.channel, {"type": PROBE_TYPE})
                await asyncio.wait_for(self.heard.wait(), interval)
            except asyncio.CancelledError:
                raise
            except Exception:
                if not deaf:
                    logger.warning("events channel %s hears nothing; its sockets resync once it does", self.channel)
                deaf = True
                continue
            if deaf:
                deaf = False
                logger.warning("events channel %s hears again: its sockets resync", self.channel)
                resync()

    def stop(self) -> None:
        for task in [*self.tasks, self.sender]:
            if task is None:
                continue
            if not task.done() and not task.get_loop().is_closed():
                task.cancel()


_current: Subscription | None = None
_layers_changed = False  # since _current was made: look its layer up again


@receiver(setting_changed)
def _forget_layer(setting: str, **kwargs: object) -> None:
    """Tests swap the layers with override_settings; Channels makes new ones then, and so must this."""
    global _layers_changed
    if setting in ("CHANNEL_LAYERS", "EVENTS_CHANNEL_LAYER"):
        _layers_changed = True


def _subscription() -> Subscription:
    """This process's subscription, made again when the layer or the event loop changed (tests swap both).

    Called for every event: the layer is looked up only after a settings
    change, since reading two settings cost a worker's event loop 6% at
    110 streams.
    """
    global _current, _layers_changed
    loop = asyncio.get_running_loop()
    if _current is not None and _current.loop is loop and not _layers_changed:
        return _current
    _layers_changed = False
    layer = events_layer()
    if _current is None or _current.layer is not layer or _current.loop is not loop:
        if _current is not None:
            with contextlib.suppress(Exception):
                _current.stop()
        _current = Subscription(layer)
    return _current

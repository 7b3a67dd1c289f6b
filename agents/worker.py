"""Agent worker processes: Channels' own background workers run the turns of a cluster.

With AGENT_WORKERS set, a web process stores the user's message and queues
`turn.start` on TURNS_CHANNEL (agents.turn_queue: a burst goes in `turn.starts`
messages); `python manage.py run_agent_worker`
(Channels' `runworker` with a graceful stop) takes it and runs the turn with
the same runtime code as the embedded default. The queue is a channels-redis
list: a message waits there (up to the layer's expiry) until a worker takes
it, and is never dropped for want of a listener. A message lost anyway (a
worker killed right after taking it, a Redis restart) is sent again by the
sweeper: a committed user message always gets its turn or an explicit end
(agents.sweeper.recover_unstarted).
"""

from __future__ import annotations

import asyncio
import logging
import signal

from channels.consumer import AsyncConsumer
from channels.worker import Worker
from django.conf import settings

from . import runtime, sweeper
from .process import DirectDispatch

logger = logging.getLogger(__name__)


class TurnWorkerConsumer(DirectDispatch, AsyncConsumer):
    """Starts each queued turn as a task of this process; the consumer itself never waits for a turn."""

    async def turn_start(self, message: dict) -> None:
        sweeper.ensure_started()
        runtime.begin_turn(
            message["thread_id"],
            message["turn_id"],
            message.get("parent_id"),
            activate=message.get("activate"),
            wait_for_previous=message.get("wait_for_previous", True),
        )

    async def turn_starts(self, message: dict) -> None:
        """Starts sent together (agents.turn_queue), each as its own `turn.start`."""
        for start in message["turns"]:
            await self.turn_start(start)


class AgentWorker(Worker):
    """Channels' worker, with a SIGTERM that drains the turns (TURN_DRAIN_SECONDS) before it exits.

    It takes turns with AGENT_WORKER_LISTENERS receives in flight on the
    turns channel at once: one at a time, each a Redis round trip behind a
    busy event loop, a burst of 300 starts waited seconds for the last one.
    A turn start only begins a task, so taking several at once is safe, as
    it is between worker processes.
    """

    async def handle(self) -> None:
        loop = asyncio.get_running_loop()
        sweeper.ensure_started()
        stopping = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stopping.set)
        count = max(1, settings.AGENT_WORKER_LISTENERS)
        listeners = [asyncio.ensure_future(self.listener(c)) for c in self.channels for _ in range(count)]
        stop = asyncio.ensure_future(stopping.wait())
        done, _ = await asyncio.wait([*listeners, stop], return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        for listener in listeners:
            listener.cancel()  # take no more turns
        failed = next((t for t in done if t is not stop and not t.cancelled() and t.exception() is not None), None)
        if failed is not None:
            raise failed.exception()  # the layer failed: exit with it
        interrupted = await runtime.drain(settings.TURN_DRAIN_SECONDS)
        logger.info("agent worker stopped; %d turn(s) ended interrupted", interrupted)

"""`python manage.py run_agent_worker`: a worker process that runs agent turns (see agents.worker)."""

from __future__ import annotations

from typing import Any

from channels.management.commands.runworker import Command as RunWorker

from agents import process
from agents.turn_queue import TURNS_CHANNEL
from agents.worker import AgentWorker


class Command(RunWorker):
    help = "Run agent turns queued by the web processes (AGENT_WORKERS), with a graceful stop on SIGTERM."
    worker_class = AgentWorker

    def add_arguments(self, parser: Any) -> None:
        super().add_arguments(parser)
        parser.set_defaults(channels=[TURNS_CHANNEL])
        for action in parser._actions:
            if action.dest == "channels":
                action.nargs = "*"

    def handle(self, *args: Any, **options: Any) -> None:
        process.tune()  # here, in the main thread: the worker's loop runs in another one
        super().handle(*args, **options)

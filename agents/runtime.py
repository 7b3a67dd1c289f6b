"""The turn runtime: runs one agent turn from the user's message to its final state.

A turn is an asyncio task owned by the process (see agents.registry), so it
runs to its end whether or not any socket is connected. Everything it does
goes through one `TurnPublisher`, which commits before it broadcasts; this
module knows nothing of sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from channels.db import database_sync_to_async
from django.conf import settings

from chat import selectors, turns
from chat.models import AgentAction, Message
from chat.retry import aretrying

from . import inbox, opening, turn_queue
from .catalog import TurnAgent, aturn_agent
from .control import acancel_turn, stop_requested
from .control import request as request_stop
from .errors import INTERRUPTED_ERROR
from .events import TurnPublisher
from .providers.base import (
    ChatMessage,
    ProviderError,
    TextDelta,
    ThinkingDelta,
    ToolCall,
    ToolCallRequest,
    UsageReport,
)
from .providers.history import build_history
from .registry import RunningTurn, registry
from .tools import TOOLS, ToolError
from .usage import TurnTokenAccumulator

logger = logging.getLogger(__name__)

# The queue (a channel-layer channel) worker processes take turns from.

SERVER_ERROR = {"code": "server_error", "message": "The agent stopped because of a server error.", "retryable": True}
STORAGE_ERROR = {
    "code": "storage_unavailable",
    "message": "The database was unavailable for too long; the answer stops here, its text so far was kept.",
    "retryable": True,
}
TOOL_TIMEOUT_SECONDS = 10.0
# How long a new turn waits for the thread's previous turn to finish cancelling.
PREVIOUS_TURN_TIMEOUT = 10.0
# How often it looks again for a previous turn running in another process.
PREVIOUS_TURN_POLL = 0.05
# A turn counts as alive while its heartbeat is this many beats old at most;
# an older one belongs to a dead process that the sweeper will end.
LIVE_BEATS = 3
# How long interrupted turns get to write their final state when a process stops.
DRAIN_FINALIZE_SECONDS = 5.0


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> None:
    """Run `callback` on `loop` from any thread."""
    loop.call_soon_threadsafe(callback)


def new_turn_id() -> str:
    return f"t-{uuid.uuid4().hex}"


@dataclass
class TurnStart:
    """What start_turn did: the stored user message (None for a regenerate), and whether a new turn runs for it."""

    turn_id: str
    user_message: dict | None
    started: bool
    task: asyncio.Task | None = None


async def start_turn(
    thread_id: int,
    content: str,
    turn_id: str | None = None,
    mentioned_documents: object = None,
    agent: TurnAgent | None = None,
    parent: int | None | turns.Follow = turns.ACTIVE_LEAF,
) -> TurnStart:
    """Store the user's message after `parent` and start its turn; a repeated turn_id starts nothing.

    The turn runs with `agent`, by default the thread's (agents.catalog):
    here as a task, or with AGENT_WORKERS in a worker process
    (agents.worker), which receives it through agents.turn_queue.
    """
    turn_id = turn_id or new_turn_id()
    # Here, with nothing running in the thread, the answer's shell goes in the same hop.
    answer_here = not settings.AGENT_WORKERS and registry.running_in_thread(thread_id) is None
    runner = await inbox.channel_name() if answer_here else ""
    opened = await opening.aopen_turn(thread_id, turn_id, content, mentioned_documents, parent, agent, runner)
    agent = agent or opened.agent
    publisher = TurnPublisher(thread_id, turn_id)
    await publisher.user_message_stored(opened.message, opened.created)
    if not opened.created:
        return TurnStart(turn_id, opened.message, started=False)
    message = opened.message
    if opened.answer is not None:
        assert agent is not None
        await publisher.opened(opened.answer, opened.history, agent.name, agent.model)
        task = begin_turn(thread_id, turn_id, message["id"], agent, publisher, wait_for_previous=False)
        return TurnStart(turn_id, message, started=True, task=task)
    # The thread's running turn ends first, in this process or another one.
    target = await _arequest_stop(thread_id, None) if opened.running else None
    was_running = await stop_requested(thread_id, target)
    if settings.AGENT_WORKERS:
        await dispatch(thread_id, turn_id, message["id"], wait_for_previous=was_running)
        return TurnStart(turn_id, message, started=True)
    task = begin_turn(thread_id, turn_id, message["id"], agent, publisher, wait_for_previous=was_running)
    return TurnStart(turn_id, message, started=True, task=task)


_arequest_stop = aretrying(request_stop)


async def start_regenerate(
    thread_id: int, parent_id: int | None, turn_id: str | None = None, agent: TurnAgent | None = None
) -> TurnStart:
    """Start a new answer to `parent_id` (a version beside the earlier answers) that becomes the active leaf.

    A turn_id this process already runs or ran starts nothing; the caller
    has checked the database for it.
    """
    turn_id = turn_id or new_turn_id()
    if registry.get(thread_id, turn_id) is not None:
        return TurnStart(turn_id, None, started=False)
    if not settings.AGENT_WORKERS:
        agent = agent or await aturn_agent(thread_id)
    was_running = await acancel_turn(thread_id)
    if registry.get(thread_id, turn_id) is not None:  # the same turn_id arrived while this one cancelled
        return TurnStart(turn_id, None, started=False)
    if settings.AGENT_WORKERS:
        await dispatch(thread_id, turn_id, parent_id, activate=True, wait_for_previous=was_running)
        return TurnStart(turn_id, None, started=True)
    task = begin_turn(thread_id, turn_id, parent_id, agent, activate=True, wait_for_previous=was_running)
    return TurnStart(turn_id, None, started=True, task=task)


async def dispatch(
    thread_id: int,
    turn_id: str,
    parent_id: int | None,
    activate: bool | None = None,
    wait_for_previous: bool = True,
) -> None:
    """Queue the turn answering `parent_id` for a worker process. Safe to repeat: a turn runs once (one shell).

    `wait_for_previous` False says the sender's cancel found nothing streaming in the thread (see begin_turn).
    """
    message: dict = {"type": "turn.start", "thread_id": thread_id, "turn_id": turn_id, "parent_id": parent_id}
    if activate is not None:
        message["activate"] = activate
    if not wait_for_previous:
        message["wait_for_previous"] = False
    await turn_queue.send(message)


def begin_turn(
    thread_id: int,
    turn_id: str,
    parent_id: int | None,
    agent: TurnAgent | None = None,
    publisher: TurnPublisher | None = None,
    activate: bool | None = None,
    wait_for_previous: bool = True,
) -> asyncio.Task:
    """Run the turn answering message `parent_id` in this process, as a task registered here.

    A repeated start of a turn that runs here already returns its task: it
    must not cancel the turn as a new turn of the thread would. With
    `wait_for_previous` False (the caller's cancel found nothing streaming
    in the thread), the turn does not look in the database for one.
    """
    running = registry.get(thread_id, turn_id)
    if running is not None and running.running and running.task is not None:
        return running.task
    turn, previous = registry.register(thread_id, turn_id)
    publisher = publisher or TurnPublisher(thread_id, turn_id)
    task = asyncio.create_task(_run(turn, publisher, agent, previous, parent_id, activate, wait_for_previous))
    turn.task = task
    return task


async def _run(
    turn: RunningTurn,
    publisher: TurnPublisher,
    agent: TurnAgent | None,
    previous: list[RunningTurn],
    parent_id: int | None,
    activate: bool | None = None,
    wait_for_previous: bool = True,
) -> str:
    """Run the turn, answering message `parent_id`, and always finalize it, whatever happens to the generation."""
    await _wait_for(turn.thread_id, previous, look_elsewhere=wait_for_previous)
    status: str = Message.Status.FAILED
    error: dict | None = None
    usage = TurnTokenAccumulator()
    heartbeat = None
    try:
        if publisher.message_id is None:  # else its shell was stored with the user message
            runner = await inbox.channel_name()
            opened = await opening.aopen_answer(turn.thread_id, turn.turn_id, agent, runner, parent_id, activate)
            agent = opened.agent
            await publisher.opened(opened.answer, opened.history, agent.name, agent.model)
        assert agent is not None, "a shell stored with the user message comes with its agent"
        turn.message_id = publisher.message_id
        if turn.message_id is None:  # started before: a repeated dispatch
            registry.mark_completed(turn.thread_id, turn.turn_id)
            return Message.Status.CANCELLED
        generation = asyncio.create_task(_generate(turn, publisher, agent, usage))
        write_errors: list[BaseException] = []

        def stop_generating(exc: BaseException) -> None:
            # The message was closed (the sweeper, a deleted thread) or the
            # database stayed away: every further token would be paid for and lost.
            write_errors.append(exc)
            generation.cancel()

        publisher.on_write_error = stop_generating
        loop = asyncio.get_running_loop()
        turn.on_cancel = lambda: _call_soon(loop, generation.cancel)
        if turn.cancel_event.is_set():
            generation.cancel()
        heartbeat = asyncio.create_task(_heartbeat(turn, generation))
        try:
            await generation
            status = Message.Status.COMPLETED
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # this task itself is being cancelled: the process is stopping
            status = Message.Status.CANCELLED
            if write_errors:
                status, error = Message.Status.FAILED, STORAGE_ERROR
        except ProviderError as exc:
            status, error = Message.Status.FAILED, exc.as_dict()
        except Exception:
            if write_errors:  # a flush re-raised the failed append
                status, error = Message.Status.FAILED, STORAGE_ERROR
            else:
                logger.exception("turn %s of thread %s crashed", turn.turn_id, turn.thread_id)
                status, error = Message.Status.FAILED, SERVER_ERROR
    except asyncio.CancelledError:
        status = Message.Status.INTERRUPTED
        error = INTERRUPTED_ERROR
        raise
    except Exception:
        logger.exception("turn %s of thread %s could not start", turn.turn_id, turn.thread_id)
        error = SERVER_ERROR
    finally:
        if heartbeat is not None:
            heartbeat.cancel()
        turn.on_cancel = None
        try:
            status = await asyncio.shield(publisher.completed(status, usage.as_usage(), error))
        finally:
            registry.mark_completed(turn.thread_id, turn.turn_id)
    return status


async def drain(timeout: float) -> int:
    """Let this process's running turns finish for up to `timeout` s, then end the rest `interrupted`; return those.

    Interrupted turns are finalized and announced by their own task (see
    _run), so no turn is left `streaming` when the process exits.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (tasks := _running_tasks()) and loop.time() < deadline:
        await asyncio.wait(tasks, timeout=deadline - loop.time())
    left = _running_tasks()
    for task in left:
        task.cancel()
    if left:
        await asyncio.wait(left, timeout=DRAIN_FINALIZE_SECONDS)
    return len(left)


def _running_tasks() -> list[asyncio.Task]:
    return [t.task for t in registry.running() if t.task is not None and not t.task.done()]


async def _wait_for(thread_id: int, previous: list[RunningTurn], look_elsewhere: bool = True) -> None:
    """Let the thread's cancelled turns end first, in this process or another one (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PREVIOUS_TURN_TIMEOUT
    tasks = [t.task for t in previous if t.task is not None and not t.task.done()]
    if tasks:
        await asyncio.wait(tasks, timeout=PREVIOUS_TURN_TIMEOUT)
    if not look_elsewhere:
        return
    beat_within = LIVE_BEATS * settings.TURN_HEARTBEAT_SECONDS
    while loop.time() < deadline and await _has_live_turn(thread_id, beat_within):
        await asyncio.sleep(PREVIOUS_TURN_POLL)


async def _heartbeat(turn: RunningTurn, generation: asyncio.Task) -> None:
    """Keep the turn visibly alive and pick up cancels made by other processes."""
    message_id = turn.message_id
    assert message_id is not None, "a heartbeat before the shell"
    while not generation.done():
        await asyncio.sleep(settings.TURN_HEARTBEAT_SECONDS)
        try:
            if await turns.atouch_turn(message_id):
                turn.cancel()
        except Exception:
            logger.exception("heartbeat of message %s failed", turn.message_id)


async def _generate(turn: RunningTurn, publisher: TurnPublisher, agent: TurnAgent, usage: TurnTokenAccumulator) -> None:
    """Call the model, run the tools it asks for, and repeat up to AGENT_MAX_STEPS model calls.

    The model gets the agent's system prompt (followed by the thread's) and only the agent's tools.
    """
    assert publisher.history is not None, "_generate() before the shell was opened"  # read with the shell
    conversation = build_history(publisher.history, settings.AGENT_HISTORY_CHARS)
    if agent.system_prompt:
        conversation.insert(0, ChatMessage("system", agent.system_prompt))
    specs = [TOOLS[name].spec for name in agent.tools]
    for _step in range(settings.AGENT_MAX_STEPS):
        text, calls = [], []
        reported = False
        try:
            # aclosing: a failure in this loop closes the model's HTTP stream at once.
            async with contextlib.aclosing(agent.provider.stream(conversation, specs)) as events:
                async for event in events:
                    if isinstance(event, TextDelta):
                        text.append(event.text)
                        publisher.push_delta(event.text)
                    elif isinstance(event, ThinkingDelta):
                        await publisher.thinking(event.text)
                    elif isinstance(event, ToolCallRequest):
                        calls.append(event.call)
                    elif isinstance(event, UsageReport):
                        reported = True
                        usage.add(event.model, event.prompt_tokens, event.completion_tokens)
        except asyncio.CancelledError:
            # Stopped mid-call: the model was billed for what it read and wrote, but reported nothing.
            if not reported:
                usage.estimate(agent.model, _prompt_text(conversation), "".join(text))
            raise
        await publisher.flush()
        if not calls:
            return
        results = [await _run_tool(publisher, call, agent.tools) for call in calls]
        # Arguments go back as valid JSON (servers may parse them), as history sends them.
        pairs = list(zip(calls, results, strict=True))
        sent = [ToolCall(call.call_id, call.name, json.dumps(recorded)) for call, (recorded, _) in pairs]
        conversation.append(ChatMessage("assistant", content="".join(text), tool_calls=sent))
        for call, (_, output) in pairs:
            conversation.append(ChatMessage("tool", content=json.dumps(output), tool_call_id=call.call_id))
    raise ProviderError(
        "step_limit", f"The agent stopped after {settings.AGENT_MAX_STEPS} model calls without a final answer.", False
    )


async def _run_tool(publisher: TurnPublisher, call: ToolCall, allowed: tuple[str, ...]) -> tuple[dict, dict]:
    """Record, run and record the result of one tool call; return (recorded input, output).

    Failures (invalid arguments, a tool the agent may not use, a tool error) become `error` actions.
    """
    try:
        arguments = json.loads(call.arguments or "{}")
        parse_error = None if isinstance(arguments, dict) else "arguments must be a JSON object"
    except ValueError as exc:
        arguments, parse_error = None, f"invalid JSON arguments: {exc}"
    recorded_input = arguments if parse_error is None else {"raw": call.arguments}
    action_id = await publisher.tool_executing(call.call_id, call.name, recorded_input)
    tool = TOOLS.get(call.name) if call.name in allowed else None
    if parse_error is not None:
        status, output = AgentAction.Status.ERROR, {"error": parse_error}
    elif tool is None:
        known = ", ".join(allowed) or "none"
        status, output = AgentAction.Status.ERROR, {"error": f"unknown tool {call.name!r}; known: {known}"}
    else:
        try:
            result = await asyncio.wait_for(asyncio.to_thread(tool.run, arguments), TOOL_TIMEOUT_SECONDS)
            status, output = AgentAction.Status.SUCCESS, result
        except ToolError as exc:
            status, output = AgentAction.Status.ERROR, {"error": str(exc)}
        except TimeoutError:
            status, output = AgentAction.Status.ERROR, {"error": f"tool took longer than {TOOL_TIMEOUT_SECONDS:g} s"}
        except Exception as exc:
            logger.exception("tool %s failed", call.name)
            status, output = AgentAction.Status.ERROR, {"error": f"tool failed: {type(exc).__name__}"}
    await publisher.tool_completed(action_id, status, output)
    return recorded_input, output


def _prompt_text(conversation: list[ChatMessage]) -> str:
    """Everything a model call was sent, as text, for estimating its prompt tokens."""
    parts = [message.content for message in conversation]
    parts += [call.name + call.arguments for message in conversation for call in message.tool_calls]
    return " ".join(parts)


_has_live_turn = database_sync_to_async(selectors.has_live_turn)

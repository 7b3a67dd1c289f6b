"""The database hops that open turns: a user message with its answer's shell, or an answer alone.

Each is one hop of Channels' database thread (chat.hops): the turn's agent
is resolved in it first, so that a misconfigured agent fails before
anything is stored, and a burst of starts made while a hop is in flight
goes in the next one together (chat.starts). agents.runtime calls them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from django.conf import settings

from chat import starts, turns
from chat.hops import in_savepoint
from chat.retry import aretrying

from .catalog import TurnAgent, turn_agent, turn_agents


class OpenedTurn(NamedTuple):
    agent: TurnAgent | None
    message: dict
    created: bool
    running: bool  # a turn of the thread was streaming: it is to be stopped
    answer: turns.Persisted | None = None  # the answer's shell, when it was stored in the same hop
    history: list | None = None  # what the answer follows, read with its shell


def open_turn(
    thread_id: int,
    turn_id: str,
    content: str,
    mentioned_documents: object,
    parent: int | None | turns.Follow,
    agent: TurnAgent | None = None,
    runner: str = "",
) -> OpenedTurn:
    """One database hop for a new turn: its agent, its user message, whether a turn of the thread is streaming.

    The agent (the thread's, unless given; a worker resolves its own) comes
    first, so a misconfigured one fails before anything is stored. With a
    `runner` (the turn runs in this process) and no turn streaming in the
    thread, the answer's shell and its history follow in
    the same hop. It only inserts rows: on PostgreSQL it may share its
    commit with the hop's other starts (chat.hops); the stop flag of a
    streaming turn, a write to an existing message, goes in a hop of its
    own, once this one stored the message.
    """
    if agent is None and not settings.AGENT_WORKERS:
        agent = turn_agent(thread_id)
    message, created = turns.store_user_message(thread_id, turn_id, content, mentioned_documents, parent)
    running = created and turns.is_streaming(thread_id)
    if not (created and runner and not running and agent is not None):
        return OpenedTurn(agent, message, created, running)
    answer, history = turns.open_answer(
        thread_id, turn_id, agent=agent.name, model=agent.model, runner=runner, parent_id=message["id"]
    )
    return OpenedTurn(agent, message, created, False, answer, history)


class _Start(NamedTuple):
    """The arguments of one open_turn() call."""

    thread_id: int
    turn_id: str
    content: str
    mentioned_documents: object
    parent: int | None | turns.Follow
    agent: TurnAgent | None = None
    runner: str = ""


def open_turns(calls: list[tuple[tuple, dict]]) -> list[tuple[bool, Any]]:
    """open_turn() for each call of one hop: the plain starts together (chat.starts), any other alone.

    Each call gets (True, its OpenedTurn) or (False, its exception); one
    stored alone rolls back alone.
    """
    requests = [_Start(*args, **kwargs) for args, kwargs in calls]
    outcomes: list[tuple[bool, Any] | None] = [None] * len(requests)
    unknown = [s.thread_id for s in requests if s.agent is None] if not settings.AGENT_WORKERS else []
    agents = turn_agents(unknown) if unknown else {}
    new, at = [], []
    for i, start in enumerate(requests):
        found = agents.get(start.thread_id)
        if isinstance(found, Exception):  # a misconfigured agent: nothing is stored
            outcomes[i] = (False, found)
            continue
        if found is not None:
            requests[i] = start = start._replace(agent=found)
        if start.parent is not turns.ACTIVE_LEAF:
            continue
        answer = (start.agent.name, start.agent.model, start.runner) if start.runner and start.agent else None
        new.append(starts.NewTurn(start.thread_id, start.turn_id, start.content, start.mentioned_documents, answer))
        at.append(i)
    for i, stored in zip(at, starts.store_new_turns(new), strict=True):
        if stored is not None:
            opened = OpenedTurn(requests[i].agent, stored.message, True, stored.running, stored.answer, stored.history)
            outcomes[i] = (True, opened)
    return [
        outcome if outcome is not None else in_savepoint(open_turn, *start)
        for outcome, start in zip(outcomes, requests, strict=True)
    ]


aopen_turn = aretrying(open_turn, shared_commit=True, batch=open_turns)


class OpenedAnswer(NamedTuple):
    """What open_answer() did: the agent the turn runs with, its shell, and the history it answers."""

    agent: TurnAgent
    answer: turns.Persisted  # created False: the turn had its shell already (a repeated start)
    history: list | None  # what the answer follows, read with its shell


def open_answer(
    thread_id: int,
    turn_id: str,
    agent: TurnAgent | None,
    runner: str,
    parent_id: int | None | turns.Follow = turns.ACTIVE_LEAF,
    activate: bool | None = None,
) -> OpenedAnswer:
    """The turn's agent (the thread's, unless given), then its answer's shell and history: one hop.

    A worker process opens each turn it is sent with it (agents.runtime),
    so a start makes one hop before its model call. On the way the default
    agent's row is written when it no longer follows the settings
    (catalog._in_step): a row no delta writer locks.
    """
    agent = agent or turn_agent(thread_id)
    shell = {"agent": agent.name, "model": agent.model, "runner": runner, "parent_id": parent_id, "activate": activate}
    persisted, history = turns.open_answer(thread_id, turn_id, **shell)
    return OpenedAnswer(agent, persisted, history)


class _Answer(NamedTuple):
    """The arguments of one open_answer() call."""

    thread_id: int
    turn_id: str
    agent: TurnAgent | None
    runner: str
    parent_id: int | None | turns.Follow = turns.ACTIVE_LEAF
    activate: bool | None = None


def open_answers(calls: list[tuple[tuple, dict]]) -> list[tuple[bool, Any]]:
    """open_answer() for each call of one hop: the agents in one query, the shells together (chat.starts).

    Each call gets (True, its OpenedAnswer) or (False, its exception); one
    the batch does not take is opened alone, in a savepoint.
    """
    requests = [_Answer(*args, **kwargs) for args, kwargs in calls]
    outcomes: list[tuple[bool, Any] | None] = [None] * len(requests)
    unknown = [a.thread_id for a in requests if a.agent is None]
    found = turn_agents(unknown) if unknown else {}
    new, taken = [], []
    for i, request in enumerate(requests):
        agent = request.agent or found[request.thread_id]
        if isinstance(agent, Exception):  # a misconfigured agent: nothing is stored
            outcomes[i] = (False, agent)
            continue
        requests[i] = request._replace(agent=agent)
        shell = {"agent": agent.name, "model": agent.model, "runner": request.runner}
        new.append(starts.NewAnswer(request.thread_id, request.turn_id, request.parent_id, request.activate, **shell))
        taken.append((i, agent))
    for (i, agent), done in zip(taken, starts.open_new_answers(new), strict=True):
        if done is not None:
            outcomes[i] = (True, OpenedAnswer(agent, *done))
    return [
        outcome if outcome is not None else in_savepoint(open_answer, *request)
        for outcome, request in zip(outcomes, requests, strict=True)
    ]


aopen_answer = aretrying(open_answer, shared_commit=True, batch=open_answers)

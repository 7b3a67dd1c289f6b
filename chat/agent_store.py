"""Agent rows: the one writer of the default agent, and the reads the API and turns need.

Staff write the other agents through the admin. The default agent's
provider settings come from the environment (agents.catalog passes them in).
"""

from __future__ import annotations

import json

from django.db import IntegrityError, connection, transaction

from .models import Agent


def sync_default_agent(provider: str, base_url: str, api_key: str, model: str, tools: list[str]) -> Agent:
    """Create the default agent, or bring it in step with these settings; return it.

    Two processes starting at once both try to create it; the partial unique
    index chat_agent_one_default keeps one, and the other reads that one.
    """
    fields = default_fields(provider, base_url, api_key, model, tools)
    agent = Agent.objects.filter(is_default=True).first()
    if agent is None:
        try:
            with transaction.atomic():
                return Agent.objects.create(is_default=True, **fields)
        except IntegrityError:
            agent = Agent.objects.get(is_default=True)
    changed = [name for name, value in fields.items() if getattr(agent, name) != value]
    if changed:
        for name in changed:
            setattr(agent, name, fields[name])
        agent.save(update_fields=changed)
    return agent


def default_fields(provider: str, base_url: str, api_key: str, model: str, tools: list[str]) -> dict:
    """The default agent's fields that follow the environment."""
    return {
        "name": provider,
        "provider": provider,
        "base_url": base_url,
        "api_key": api_key,
        "model": model,
        "tools": tools,
    }


def agent_dict(agent: Agent) -> dict:
    """The API's agent object: never the provider's URL or key."""
    return {
        "id": agent.pk,
        "name": agent.name,
        "description": agent.description,
        "model": agent.model,
        "default": agent.is_default,
    }


def list_agents() -> list[dict]:
    return [agent_dict(agent) for agent in Agent.objects.order_by("-is_default", "name", "id")]


def agent_exists(agent_id: int) -> bool:
    return Agent.objects.filter(pk=agent_id).exists()


_TURN_AGENT_FIELDS = ("id", "name", "provider", "base_url", "api_key", "model", "system_prompt", "tools", "is_default")


def turn_agents(thread_id: int) -> tuple[Agent | None, Agent | None, str]:
    """The thread's agent (None without one), the default agent (None before it exists) and the thread's prompt.

    One hand-written query, as a turn starts; the rows carry what a turn
    needs of an agent, not its description or creation time.
    """
    return turn_agents_of([thread_id]).get(thread_id, (None, None, ""))


def turn_agents_of(thread_ids: list[int]) -> dict[int, tuple[Agent | None, Agent | None, str]]:
    """turn_agents() of many threads in one query; a thread that is gone is left out."""
    columns = ", ".join(f"a.{name}" for name in _TURN_AGENT_FIELDS)
    marks = ", ".join(["%s"] * len(thread_ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT t.id, t.system_prompt, t.agent_id, {columns} FROM chat_thread t"
            f" LEFT JOIN chat_agent a ON a.id = t.agent_id OR a.is_default = %s WHERE t.id IN ({marks})",
            [True, *thread_ids],
        )
        rows = cursor.fetchall()
    agents: dict[int, Agent] = {}  # each row once, however many threads share it
    found: dict[int, tuple[Agent | None, Agent | None, str]] = {}
    for thread_id, prompt, agent_id, *values in rows:
        own, default, _ = found.get(thread_id, (None, None, prompt))
        if values[0] is not None:  # else no agent at all yet
            agent = agents.get(values[0])
            if agent is None:
                fields = dict(zip(_TURN_AGENT_FIELDS, values, strict=True))
                fields["tools"] = json.loads(fields["tools"]) if isinstance(fields["tools"], str) else fields["tools"]
                fields["is_default"] = bool(fields["is_default"])
                agent = agents[values[0]] = Agent(**fields)
            if agent.pk == agent_id:
                own = agent
            if agent.is_default:
                default = agent
        found[thread_id] = (own, default, prompt)
    return found

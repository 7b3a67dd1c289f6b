"""Agent rows: the one writer of the default agent, and the reads the API and turns need.

Staff write the other agents through the admin. The default agent's
provider settings come from the environment (agents.catalog passes them in).
"""

from __future__ import annotations

from django.db import IntegrityError, transaction

from .models import Agent, Thread


def sync_default_agent(provider: str, base_url: str, api_key: str, model: str, tools: list[str]) -> Agent:
    """Create the default agent, or bring it in step with these settings; return it.

    Two processes starting at once both try to create it; the partial unique
    index chat_agent_one_default keeps one, and the other reads that one.
    """
    fields = {
        "name": provider,
        "provider": provider,
        "base_url": base_url,
        "api_key": api_key,
        "model": model,
        "tools": tools,
    }
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


def thread_agent(thread_id: int) -> tuple[Agent | None, str]:
    """The thread's agent (None when it has none, or it was deleted) and its system prompt."""
    thread = Thread.objects.select_related("agent").filter(pk=thread_id).first()
    if thread is None:
        return None, ""
    return thread.agent, thread.system_prompt

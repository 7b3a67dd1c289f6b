"""Which agent a turn runs with: its provider, model, tools and system prompt.

The default agent is a row kept in step with the environment's provider
settings (settings.AGENT_PROVIDER, OPENAI_*) each time it is read, so it
follows the configuration a process starts with; a thread without an agent
runs with it.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from chat import agent_store
from chat.hops import hop
from chat.models import Agent

from .providers.base import Provider
from .tools import TOOLS


@dataclass(frozen=True)
class TurnAgent:
    """What a turn needs of its agent. `name` and `model` are what agent_started shows."""

    name: str
    model: str
    provider: Provider
    tools: tuple[str, ...]
    system_prompt: str


def default_agent() -> Agent:
    """The default agent row, created or updated from the environment's provider settings."""
    return agent_store.sync_default_agent(**_default_fields())


def _default_fields() -> dict:
    """What the environment says the default agent's provider, server, key, model and tools are."""
    provider = settings.AGENT_PROVIDER
    if provider not in Agent.Provider.values:
        raise ValueError(f"unknown AGENT_PROVIDER {provider!r}: use 'local' or 'openai'")
    if provider == "openai":
        base_url, api_key, model = settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY, settings.OPENAI_MODEL
    else:
        base_url, api_key, model = "", "", "local"
    return {"provider": provider, "base_url": base_url, "api_key": api_key, "model": model, "tools": list(TOOLS)}


def _in_step(default: Agent | None) -> Agent:
    """The default agent as read, when it already follows the environment; else default_agent() brings it in step."""
    if default is not None and all(
        getattr(default, name) == value for name, value in agent_store.default_fields(**_default_fields()).items()
    ):
        return default
    return default_agent()


def build_provider(agent: Agent) -> Provider:
    """The model provider an agent names, with its own server, key and model."""
    if agent.provider == Agent.Provider.LOCAL:
        from .providers.local import LocalProvider

        return LocalProvider(model=agent.model or "local")
    if agent.provider == Agent.Provider.OPENAI:
        from .providers.openai import OpenAIProvider

        return OpenAIProvider(agent.model or None, base_url=agent.base_url, api_key=agent.api_key)
    raise ValueError(f"agent {agent.pk} names an unknown provider {agent.provider!r}: use 'local' or 'openai'")


def join_prompts(*prompts: str) -> str:
    return "\n\n".join(prompt.strip() for prompt in prompts if prompt and prompt.strip())


def turn_agent(thread_id: int) -> TurnAgent:
    """The agent a new turn of the thread runs with: the thread's, or the default one."""
    own, default, thread_prompt = agent_store.turn_agents(thread_id)
    return _turn_agent(own, _in_step(default), thread_prompt)  # _in_step raises for a misconfigured provider


def turn_agents(thread_ids: list[int]) -> dict[int, TurnAgent | Exception]:
    """turn_agent() of many threads in one query; each gets its agent, or the error a start alone would raise."""
    found = agent_store.turn_agents_of(thread_ids)
    in_step: dict[int | None, Agent] = {}  # the default agent, brought in step once
    agents: dict[int, TurnAgent | Exception] = {}
    for thread_id in thread_ids:
        own, default, thread_prompt = found.get(thread_id, (None, None, ""))
        key = default.pk if default is not None else None
        try:
            if key not in in_step:
                in_step[key] = _in_step(default)
            agents[thread_id] = _turn_agent(own, in_step[key], thread_prompt)
        except Exception as exc:
            agents[thread_id] = exc
    return agents


def _turn_agent(own: Agent | None, default: Agent, thread_prompt: str) -> TurnAgent:
    agent = own or default
    tools = tuple(name for name in agent.tools or () if name in TOOLS)
    provider = build_provider(agent)
    return TurnAgent(
        name=agent.name,
        model=provider.model,
        provider=provider,
        tools=tools,
        system_prompt=join_prompts(agent.system_prompt, thread_prompt),
    )


aturn_agent = hop(turn_agent)

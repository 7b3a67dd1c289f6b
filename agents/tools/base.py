"""A tool the agent can call: a name, a JSON schema for its input, and a function."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agents.providers.base import ToolSpec


class ToolError(Exception):
    """The tool ran but could not produce a result; the message is shown to the model."""


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict
    run: Callable[[dict], dict]

    @property
    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, self.parameters)

"""The tools agents may call, by name."""

from .base import Tool, ToolError
from .calculator import calculator
from .clock import clock

TOOLS: dict[str, Tool] = {tool.name: tool for tool in (calculator, clock)}

__all__ = ["TOOLS", "Tool", "ToolError"]

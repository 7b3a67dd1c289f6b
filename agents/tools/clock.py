"""The current date and time in UTC."""

from __future__ import annotations

from datetime import UTC, datetime

from .base import Tool


def run(arguments: dict) -> dict:
    now = datetime.now(UTC)
    return {"utc": now.isoformat(timespec="seconds"), "unix": int(now.timestamp())}


clock = Tool(
    name="clock",
    description="Get the current date and time (UTC).",
    parameters={"type": "object", "properties": {}, "additionalProperties": False},
    run=run,
)

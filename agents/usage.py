"""Token usage of a turn summed over its model calls, priced from settings."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from django.conf import settings


def price_micros(model: str, prompt_tokens: int, completion_tokens: int) -> int:
    """Cost in micro-dollars from settings.MODEL_PRICES (per million tokens); 0 when unknown."""
    try:
        prompt_price, completion_price = settings.MODEL_PRICES.get(model, (0, 0))
        total = prompt_tokens * int(prompt_price) + completion_tokens * int(completion_price)
    except (TypeError, ValueError):
        return 0
    return max(0, round(total / 1_000_000))


# A common rule of thumb for English text and code: about four characters per token.
CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    """Tokens a model would count for `text`, estimated from its length."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


@dataclass
class TurnTokenAccumulator:
    """Sums the usage of every model call in one turn, with a per-model breakdown."""

    calls: list[dict] = field(default_factory=list)

    def add(self, model: str, prompt_tokens: int, completion_tokens: int, estimated: bool = False) -> None:
        prompt_tokens = max(0, int(prompt_tokens or 0))
        completion_tokens = max(0, int(completion_tokens or 0))
        call = {
            "model": model,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "cost_micros": price_micros(model, prompt_tokens, completion_tokens),
        }
        if estimated:
            call["estimated"] = True
        self.calls.append(call)

    def estimate(self, model: str, prompt: str, completion: str) -> None:
        """Count a model call that was stopped before its provider reported usage, from the text sent and received."""
        self.add(model, estimate_tokens(prompt), estimate_tokens(completion), estimated=True)

    def __bool__(self) -> bool:
        return bool(self.calls)

    def breakdown(self) -> dict[str, dict]:
        models: dict[str, dict] = {}
        for call in self.calls:
            entry = models.setdefault(
                call["model"],
                {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cost_micros": 0, "calls": 0},
            )
            for key in ("prompt_tokens", "completion_tokens", "total_tokens", "cost_micros"):
                entry[key] += call[key]
            entry["calls"] += 1
        return models

    def as_usage(self) -> dict | None:
        """The usage dict `finalize_assistant_turn` stores, or None when nothing was called."""
        if not self.calls:
            return None
        return {
            "model": self.calls[0]["model"],
            "prompt_tokens": sum(c["prompt_tokens"] for c in self.calls),
            "completion_tokens": sum(c["completion_tokens"] for c in self.calls),
            "total_tokens": sum(c["total_tokens"] for c in self.calls),
            "cost_micros": sum(c["cost_micros"] for c in self.calls),
            "model_breakdown": self.breakdown(),
            "call_details": list(self.calls),
            **({"estimated": True} if any(c.get("estimated") for c in self.calls) else {}),
        }

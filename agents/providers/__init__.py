"""The model provider selected by settings.AGENT_PROVIDER."""

from __future__ import annotations

from django.conf import settings

from .base import Provider


def get_provider(name: str | None = None) -> Provider:
    name = name or settings.AGENT_PROVIDER
    if name == "local":
        from .local import LocalProvider

        return LocalProvider()
    if name == "openai":
        from .openai import OpenAIProvider

        return OpenAIProvider()
    raise ValueError(f"unknown AGENT_PROVIDER {name!r}: use 'local' or 'openai'")

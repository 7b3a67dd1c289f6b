"""Channel layers for tests, named in override_settings(CHANNEL_LAYERS=...)."""

from channels.layers import InMemoryChannelLayer


class BrokenChannelLayer(InMemoryChannelLayer):
    """A layer whose group_send always fails, as when Redis has gone away."""

    async def group_send(self, group: str, message: dict) -> None:
        raise ConnectionError("the channel layer is down")

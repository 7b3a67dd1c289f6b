from django.apps import AppConfig


class WebConfig(AppConfig):
    """The transport: HTTP API, chat page, thread socket, staff pages."""

    name = "web"

    def ready(self) -> None:
        from .sessions import connect_signals

        connect_signals()

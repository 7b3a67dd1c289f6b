from django.apps import AppConfig


class WebConfig(AppConfig):
    """The transport: HTTP API, chat page, thread socket, staff pages."""

    name = "web"

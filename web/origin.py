"""The socket's Origin check: the full origin (scheme, host, port) must be the server's own or listed.

Channels' AllowedHostsOriginValidator compares host names only, so a page on
another port or scheme of the same host could open sockets with the user's
cookie. Here the server's own origin is the request's scheme (behind a proxy,
the one SECURE_PROXY_SSL_HEADER names) and its Host header, which must itself
be one of ALLOWED_HOSTS; ALLOWED_ORIGINS adds exact origins.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize(origin: str) -> str | None:
    """`scheme://host:port` in lower case with the port made explicit, or None when it is no http(s) origin."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port or DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname or parts.path or parts.query or parts.username:
        return None
    return f"{scheme}://{parts.hostname.lower()}:{port}"


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def own_origin(scope: dict) -> str | None:
    """The origin of the page this server itself serves for this request, or None when its Host is not allowed."""
    host = _header(scope, b"host")
    if host is None or not validate_host(split_domain_port(host)[0], settings.ALLOWED_HOSTS):
        return None
    secure = scope.get("scheme") in ("wss", "https")
    proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy:
        header = proxy[0].removeprefix("HTTP_").lower().replace("_", "-").encode()
        secure = _header(scope, header) == proxy[1]
    return normalize(f"{'https' if secure else 'http'}://{host}")


def origin_allowed(scope: dict) -> bool:
    """Whether the socket's Origin is the server's own origin or one of ALLOWED_ORIGINS."""
    origin = _header(scope, b"origin")
    if origin is None or (origin := normalize(origin)) is None:
        return False
    allowed = {normalize(o) for o in settings.ALLOWED_ORIGINS}
    return origin == own_origin(scope) or origin in allowed


class OriginValidator:
    """ASGI middleware: refuse the handshake of a socket from any other origin."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket" and not origin_allowed(scope):
            denier = WebsocketDenier()
            return await denier(scope, receive, send)
        return await self.application(scope, receive, send)

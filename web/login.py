"""Login throttling (django-axes) for every login that comes with a request."""

from __future__ import annotations

from typing import Any

from axes.backends import AxesStandaloneBackend
from django.http import HttpRequest


class ThrottledLoginBackend(AxesStandaloneBackend):
    """Axes' lockout check, skipped when there is no request to count (the shell, test clients' `login()`).

    Every login over the network (the login page, the admin's) passes its
    request, so none escapes the per-name and per-address count.
    """

    def authenticate(self, request: HttpRequest | None, *args: Any, **kwargs: Any) -> None:
        if request is None:
            return None
        return super().authenticate(request, *args, **kwargs)

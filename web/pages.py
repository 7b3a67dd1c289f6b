"""The chat page: one HTML shell; the thread list and messages load through the API and the socket."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie


@login_required
@ensure_csrf_cookie
def index(request: HttpRequest, thread_id: int | None = None) -> HttpResponse:
    """Render the chat page, opening `thread_id` when the URL names one.

    Whether the thread exists and is the user's is answered by the API and the
    socket (404 / close 4404), which the page shows; the shell itself reads nothing.
    """
    return render(request, "chat/index.html", {"thread_id": thread_id})

"""The chat page."""

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse


@login_required
def index(request, thread_id=None):
    return HttpResponse("chat page placeholder")

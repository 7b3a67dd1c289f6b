"""Users of bench/streams.py: `python bench/stream_setup.py COUNT PREFIX [--migrate]`, in a target's environment.

Makes COUNT users (`PREFIX-0` ...), each with one new thread and one
logged-in session, in one transaction, and prints them as one JSON line:
[[session_key, thread_id], ...]. A stream of the bench is one such user.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(count: int, prefix: str, migrate: bool) -> None:
    import django

    django.setup()
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
    from django.contrib.sessions.backends.db import SessionStore
    from django.core.management import call_command
    from django.db import transaction

    from chat.threads import create_thread

    if migrate:
        call_command("migrate", verbosity=0)
    User = get_user_model()
    pool = []
    with transaction.atomic():
        User.objects.bulk_create([User(username=f"{prefix}-{i}", password="!") for i in range(count)])
        for user in User.objects.filter(username__startswith=f"{prefix}-").order_by("pk"):
            thread = create_thread(user, title="bench")
            session = SessionStore()
            session[SESSION_KEY] = str(user.pk)
            session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
            session[HASH_SESSION_KEY] = user.get_session_auth_hash()
            session.create()
            pool.append([session.session_key, thread.pk])
    print(json.dumps(pool))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], "--migrate" in sys.argv[3:])

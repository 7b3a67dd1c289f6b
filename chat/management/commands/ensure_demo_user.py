"""Create the demo login that `scripts/serve` prints, once; later starts only print it again."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = (
        "Create the demo user (staff and superuser) once, with --password or a random password kept in "
        "DEMO_PASSWORD_FILE; an existing user is left as it is (only an explicit, different --password is set)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="demo")
        parser.add_argument("--password", default="", help="the password to use instead of a random one")

    def handle(self, *args: Any, username: str, password: str, **options: Any) -> None:
        path = Path(settings.DEMO_PASSWORD_FILE)
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            password = password or _kept_password(path)
            get_user_model().objects.create_superuser(username=username, password=password)
            self.stdout.write(f"Created demo user {username!r}")
        elif password and not user.check_password(password):
            # Setting it again when it matches would log every session out for nothing.
            user.set_password(password)
            user.save(update_fields=["password"])
            self.stdout.write(f"Set the password of demo user {username!r}")
        else:
            kept = path.read_text().strip() if path.exists() else ""
            password = password or (kept if kept and user.check_password(kept) else "")
            self.stdout.write(f"Demo user {username!r} exists; left unchanged")
        shown = password or f"(not the one in {path.name}; set DEMO_PASSWORD to choose one)"
        self.stdout.write(f"Log in as:   {username} / {shown}")


def _kept_password(path: Path) -> str:
    """The password kept in `path`, made (random) and written there, readable by its owner only, when missing."""
    if path.exists() and (kept := path.read_text().strip()):
        return kept
    password = secrets.token_urlsafe(12)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(password + "\n")
    return password

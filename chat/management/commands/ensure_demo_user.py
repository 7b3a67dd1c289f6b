"""Create or update the demo login that `scripts/serve` prints."""

import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create or update the demo user (DEMO_USERNAME / DEMO_PASSWORD, staff and superuser)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--username", default=os.environ.get("DEMO_USERNAME") or "demo")
        parser.add_argument("--password", default=os.environ.get("DEMO_PASSWORD") or "demo-password")

    def handle(self, *args, username: str, password: str, **options) -> None:
        user, created = get_user_model().objects.get_or_create(username=username)
        user.is_staff = True
        user.is_superuser = True
        user.is_active = True
        user.set_password(password)
        user.save()
        self.stdout.write(f"{'Created' if created else 'Updated'} demo user {username!r}")

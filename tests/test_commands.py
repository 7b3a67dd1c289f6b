"""Management commands that scripts/serve runs."""

from io import StringIO

from django.contrib.auth import authenticate, get_user_model
from django.core.management import call_command

from tests.base import ChatTestCase


class EnsureDemoUserTests(ChatTestCase):
    def run_command(self, *args: str) -> str:
        out = StringIO()
        call_command("ensure_demo_user", *args, stdout=out)
        return out.getvalue()

    def test_creates_a_staff_login(self) -> None:
        """The demo user exists afterwards, is staff and superuser, and logs in with the given password."""
        self.assertIn("Created", self.run_command("--username", "demo", "--password", "pw-1"))
        user = authenticate(username="demo", password="pw-1")
        self.assertIsNotNone(user)
        self.assertTrue(user.is_staff and user.is_superuser and user.is_active)

    def test_running_again_updates_the_password(self) -> None:
        """A second run keeps one user and makes the new password the valid one."""
        self.run_command("--username", "demo", "--password", "old")
        self.assertIn("Updated", self.run_command("--username", "demo", "--password", "new"))
        self.assertEqual(get_user_model().objects.filter(username="demo").count(), 1)
        self.assertIsNone(authenticate(username="demo", password="old"))
        self.assertIsNotNone(authenticate(username="demo", password="new"))

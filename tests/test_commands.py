"""Management commands that scripts/serve runs."""

import tempfile
from io import StringIO
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import override_settings

from tests.base import ChatTestCase


class EnsureDemoUserTests(ChatTestCase):
    def setUp(self) -> None:
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        self.password_file = Path(folder.name) / ".demo-password"
        self.enterContext(override_settings(DEMO_PASSWORD_FILE=self.password_file))

    def run_command(self, *args: str) -> str:
        out = StringIO()
        call_command("ensure_demo_user", *args, stdout=out)
        return out.getvalue()

    def demo(self):
        return get_user_model().objects.get(username="demo")

    def test_creates_a_staff_login_with_the_given_password(self) -> None:
        """The demo user exists afterwards, is staff and superuser, and logs in with DEMO_PASSWORD."""
        out = self.run_command("--username", "demo", "--password", "pw-1")
        self.assertIn("Log in as:   demo / pw-1", out)
        user = self.demo()
        self.assertTrue(user.check_password("pw-1"))
        self.assertTrue(user.is_staff and user.is_superuser and user.is_active)

    def test_random_password_is_kept_and_printed_again(self) -> None:
        """Without a password the first start makes a random one, keeps it in the file, and later starts print it."""
        first = self.run_command("--username", "demo")
        kept = self.password_file.read_text().strip()
        self.assertGreaterEqual(len(kept), 12)
        self.assertNotEqual(kept, "demo-password")
        self.assertEqual(self.password_file.stat().st_mode & 0o777, 0o600)
        self.assertIn(f"demo / {kept}", first)
        self.assertTrue(self.demo().check_password(kept))
        self.assertIn(f"demo / {kept}", self.run_command("--username", "demo"))

    def test_later_starts_never_reset_the_user(self) -> None:
        """A second start changes nothing: same password hash (no session logged out), flags as the admin left them."""
        self.run_command("--username", "demo")
        user = self.demo()
        user.set_password("chosen-by-the-owner")
        user.is_superuser = False
        user.save()
        self.run_command("--username", "demo")
        after = self.demo()
        self.assertEqual(after.password, user.password)
        self.assertFalse(after.is_superuser)
        self.assertEqual(get_user_model().objects.filter(username="demo").count(), 1)

    def test_demo_password_overrides_only_when_different(self) -> None:
        """DEMO_PASSWORD sets a different password; the same one again leaves the hash (and the sessions) alone."""
        self.run_command("--username", "demo", "--password", "old")
        self.run_command("--username", "demo", "--password", "new")
        self.assertTrue(self.demo().check_password("new"))
        hashed = self.demo().password
        self.run_command("--username", "demo", "--password", "new")
        self.assertEqual(self.demo().password, hashed)

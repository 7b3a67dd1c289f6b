"""Production settings by default: DEBUG off, a random signing key outside the repository, HTTPS by environment."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from django.conf import settings
from django.test import SimpleTestCase

from tests.base import ChatTransactionTestCase
from tests.live import DaphneServer

# The documented production environment (docs/SECURITY.md), with a real-looking key and host.
PRODUCTION_ENV = {
    "SECRET_KEY": "k" * 10 + "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP",
    "ALLOWED_HOSTS": "chat.example.com",
    "HTTPS": "1",
    "SECURE_HSTS_PRELOAD": "1",
}
SETTING_NAMES = ("DEBUG", "SECRET_KEY", "HTTPS", "SECURE_HSTS_PRELOAD", "ALLOWED_HOSTS", "SECRET_KEY_FILE")


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run `code` with the project's settings in a fresh interpreter, under `env` only (no inherited settings)."""
    base = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=settings.BASE_DIR,
        env={**base, "DJANGO_SETTINGS_MODULE": "chatproject.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


SHOW = "import django; django.setup(); from django.conf import settings as s; print(s.DEBUG, s.SECRET_KEY)"


class SettingsTests(SimpleTestCase):
    def setUp(self) -> None:
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        self.key_file = Path(folder.name) / "key"

    def show(self, **env: str) -> subprocess.CompletedProcess:
        return run_python(SHOW, {"SECRET_KEY_FILE": str(self.key_file), **env})

    def test_debug_is_off_unless_set(self) -> None:
        """With no DEBUG in the environment the server runs with DEBUG off; DEBUG=1 turns it on."""
        self.assertEqual(self.show().stdout.split()[0], "False")
        self.assertEqual(self.show(DEBUG="1").stdout.split()[0], "True")

    def test_without_secret_key_a_random_key_is_made_once_and_kept(self) -> None:
        """No SECRET_KEY: a long random key is written to a private file once and every later start uses it."""
        first = self.show().stdout.split()[1]
        second = self.show().stdout.split()[1]
        self.assertEqual(first, second)
        self.assertGreaterEqual(len(first), 50)
        self.assertEqual(self.key_file.read_text().strip(), first)
        self.assertEqual(self.key_file.stat().st_mode & 0o777, 0o600)
        other = tempfile.mktemp()
        self.addCleanup(lambda: os.path.exists(other) and os.unlink(other))
        self.assertNotEqual(run_python(SHOW, {"SECRET_KEY_FILE": other}).stdout.split()[1], first)

    def test_no_key_written_in_the_repository_signs(self) -> None:
        """The settings hold no literal key: the kept key file is git-ignored and the old development key is gone."""
        source = (Path(settings.BASE_DIR) / "chatproject" / "settings.py").read_text()
        self.assertNotIn("dev-only-insecure-key", source)
        ignored = (Path(settings.BASE_DIR) / ".gitignore").read_text().split()
        self.assertIn("/.secret_key", ignored)
        self.assertIn("/.demo-password", ignored)

    def test_an_empty_secret_key_is_refused_with_a_clear_message(self) -> None:
        """SECRET_KEY set to nothing stops the start with a message naming SECRET_KEY."""
        result = self.show(SECRET_KEY="  ")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("SECRET_KEY is set but empty", result.stderr)

    def test_check_deploy_is_clean_under_the_documented_production_environment(self) -> None:
        """`manage.py check --deploy` reports no issue at all with the documented production variables."""
        result = subprocess.run(
            [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
            cwd=settings.BASE_DIR,
            env={**{k: v for k, v in os.environ.items() if k not in SETTING_NAMES}, **PRODUCTION_ENV},
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("no issues", result.stdout)

    def test_https_settings_come_from_the_environment(self) -> None:
        """HTTPS=1 turns on secure cookies, HSTS and the SSL redirect; BEHIND_PROXY=1 trusts X-Forwarded-Proto."""
        code = (
            "import django; django.setup(); from django.conf import settings as s; "
            "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, "
            "getattr(s, 'SECURE_PROXY_SSL_HEADER', None))"
        )
        off = run_python(code, {"SECRET_KEY_FILE": str(self.key_file)}).stdout.split()
        self.assertEqual(off, ["False", "False", "False", "0", "None"])
        on = run_python(code, {"SECRET_KEY_FILE": str(self.key_file), "HTTPS": "1", "BEHIND_PROXY": "1"}).stdout
        self.assertEqual(on.split()[:4], ["True", "True", "True", "31536000"])
        self.assertIn("HTTP_X_FORWARDED_PROTO", on)


class DefaultServerTests(ChatTransactionTestCase):
    """The server as the README's first command starts it: no DEBUG in the environment."""

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.server = DaphneServer({"DEBUG": None}, name=cls.__name__).start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()
        super().tearDownClass()

    def fetch(self, path: str) -> tuple[int, str, dict]:
        try:
            with urllib.request.urlopen(f"{self.server.base_url}{path}", timeout=30) as response:
                return response.status, response.read().decode(), dict(response.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace"), dict(exc.headers)

    def test_an_anonymous_404_shows_no_url_patterns(self) -> None:
        """A missing page answers a plain 404: no URLconf listing, no settings, no traceback."""
        status, body, _ = self.fetch("/no-such-page/")
        self.assertEqual(status, 404)
        for leak in ("URLconf", "api/threads", "Traceback", "settings.py"):
            self.assertNotIn(leak, body)

    def test_static_files_are_served_with_debug_off(self) -> None:
        """The chat page's script and style are served by WhiteNoise without DEBUG or collectstatic."""
        for path in ("/static/chat/app.js", "/static/chat/app.css", "/static/admin/css/base.css"):
            with self.subTest(path=path):
                self.assertEqual(self.fetch(path)[0], 200)

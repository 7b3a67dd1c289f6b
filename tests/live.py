"""A real daphne process on the test database, and a logged-in HTTP session against it.

For TransactionTestCase end-to-end tests: rows the test commits are seen by
the server and the other way round. Killing the process (SIGKILL) simulates
a crash; `restart()` brings it back on the same port.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from django.conf import settings
from django.db import connection

from tests.services import ServiceExited, free_port, wait_until

ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts"


def current_database_url() -> str:
    """DATABASE_URL of the database this test run uses (the test database, not the configured one)."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    if db["ENGINE"] == "django.db.backends.postgresql":
        user = urllib.parse.quote(db.get("USER") or "", safe="")
        password = urllib.parse.quote(db.get("PASSWORD") or "", safe="")
        auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        port = f":{db['PORT']}" if db.get("PORT") else ""
        return f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}{port}/{db['NAME']}"
    raise RuntimeError(f"no DATABASE_URL for engine {db['ENGINE']}")


def _daphne_command() -> list[str]:
    daphne = Path(sys.executable).parent / "daphne"
    if daphne.exists():
        return [str(daphne)]
    return [sys.executable, "-m", "daphne"]


class ChildProcess:
    """A process a test started: its Popen, its log, and a bounded stop (SIGTERM, then SIGKILL)."""

    process: subprocess.Popen | None = None
    log_path: Path

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.is_running():
            assert self.process is not None
            self.process.send_signal(signum)

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM (the graceful stop), then SIGKILL if it does not exit in time."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL (also of a stopped process), as a crash would: nothing in it gets to clean up."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.kill()
        self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class DaphneServer(ChildProcess):
    """`daphne chatproject.asgi:application` on 127.0.0.1 and a free port, on the test database.

    `env` adds or overrides environment variables of the server process
    (e.g. LOCAL_MODEL_DELAY_MS, TURN_STALE_SECONDS, REDIS_URL); None removes one.
    """

    def __init__(self, env: dict[str, str] | None = None, name: str = "daphne", port: int | None = None) -> None:
        self.port = port or free_port()
        self.env = {key: None if value is None else str(value) for key, value in (env or {}).items()}
        ARTIFACTS.mkdir(exist_ok=True)
        self.log_path = ARTIFACTS / f"{name}-{self.port}.log"
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def origin(self) -> str:
        """The Origin header a WebSocket client must send."""
        return self.base_url

    def start(self, timeout: float = 60, request: bool = True) -> DaphneServer:
        """Start the process and return once it answers HTTP.

        With `request=False` it returns once the port accepts TCP connections,
        and no request ever reaches the application (daphne makes an
        application instance only for a request it has read).
        """
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("daphne is already running")
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "chatproject.settings",
            "DATABASE_URL": current_database_url(),
            "PYTHONUNBUFFERED": "1",
            # Test users are made with MD5 hashes (tests.base.FAST_HASHING).
            "FAST_PASSWORD_HASHING": "1",
            **self.env,
        }
        env = {key: value for key, value in env.items() if value is not None}
        log = open(self.log_path, "ab")
        log.write(f"--- starting daphne on port {self.port}\n".encode())
        log.flush()
        self.process = subprocess.Popen(
            [*_daphne_command(), "-b", "127.0.0.1", "-p", str(self.port), "chatproject.asgi:application"],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        try:
            ready = self._answers_http if request else self._accepts_tcp
            wait_until(ready, timeout, f"daphne on port {self.port} (log: {self.log_path})")
        except BaseException:
            self.kill()
            raise
        return self

    def _answers_http(self) -> bool:
        if self.process.poll() is not None:
            raise ServiceExited(f"daphne exited with {self.process.returncode}; log:\n{self.log_tail()}")
        try:
            urllib.request.urlopen(f"{self.base_url}/accounts/login/", timeout=2).close()
        except urllib.error.HTTPError:
            pass  # Any HTTP answer means it is serving.
        return True

    def _accepts_tcp(self) -> bool:
        if self.process.poll() is not None:
            raise ServiceExited(f"daphne exited with {self.process.returncode}; log:\n{self.log_tail()}")
        socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
        return True

    def restart(self, timeout: float = 60) -> DaphneServer:
        """Stop (if running) and start again on the same port."""
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> DaphneServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class HttpSession:
    """A cookie-keeping HTTP client (stdlib only) that logs in like a browser and calls the JSON API."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies), _NoRedirect())

    def cookie(self, name: str) -> str | None:
        return next((c.value for c in self.cookies if c.name == name), None)

    @property
    def cookie_header(self) -> str:
        """The `Cookie` header value for a WebSocket client."""
        return "; ".join(f"{c.name}={c.value}" for c in self.cookies)

    def login(self, username: str, password: str) -> str:
        """Log in through /accounts/login/ (CSRF cookie and form token); return the Cookie header."""
        page = self.opener.open(f"{self.base_url}/accounts/login/", timeout=30).read().decode()
        match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        if match is None:
            raise AssertionError("the login page has no csrfmiddlewaretoken field")
        form = urllib.parse.urlencode(
            {"username": username, "password": password, "csrfmiddlewaretoken": match.group(1)}
        ).encode()
        request = urllib.request.Request(f"{self.base_url}/accounts/login/", data=form, method="POST")
        try:
            self.opener.open(request, timeout=30).close()
        except urllib.error.HTTPError as exc:
            if exc.code != 302:
                raise AssertionError(f"login answered {exc.code}") from exc
        if self.cookie("sessionid") is None:
            raise AssertionError(f"login as {username!r} failed: no session cookie")
        return self.cookie_header

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict | None]:
        """Call the API; return (status, decoded JSON or None). Sends the CSRF token on unsafe methods."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if method not in ("GET", "HEAD") and (token := self.cookie("csrftoken")):
            headers["X-CSRFToken"] = token
        request = urllib.request.Request(f"{self.base_url}{path}", data=data, method=method, headers=headers)
        try:
            with self.opener.open(request, timeout=30) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, None

    def get(self, path: str) -> tuple[int, dict | None]:
        return self.request("GET", path)

    def post(self, path: str, body: dict | None = None) -> tuple[int, dict | None]:
        return self.request("POST", path, body if body is not None else {})


def login_cookie(server: DaphneServer, username: str, password: str) -> str:
    """Log in to `server`; return the Cookie header for a WebSocket client."""
    return HttpSession(server.base_url).login(username, password)


def ws_headers(server: DaphneServer, cookie: str) -> dict[str, str]:
    """`additional_headers` for `websockets.connect` to `server` as the logged-in user."""
    return {"Cookie": cookie, "Origin": server.origin}


class WorkerProcess(ChildProcess):
    """`manage.py run_agent_worker` on the test database: a process that runs queued agent turns."""

    READY = "Running worker for channels"

    def __init__(self, env: dict[str, str] | None = None, name: str = "worker") -> None:
        self.env = {key: str(value) for key, value in (env or {}).items()}
        ARTIFACTS.mkdir(exist_ok=True)
        self.log_path = ARTIFACTS / f"{name}-{os.getpid()}.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> WorkerProcess:
        """Start the worker and return once it listens for turns."""
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "chatproject.settings",
            "DATABASE_URL": current_database_url(),
            "PYTHONUNBUFFERED": "1",
            "AGENT_WORKERS": "1",
            **self.env,
        }
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "run_agent_worker"],
                cwd=settings.BASE_DIR,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def ready() -> bool:
            if self.process.poll() is not None:
                raise ServiceExited(f"worker exited with {self.process.returncode}; log:\n{self.log_tail()}")
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                return self.READY.encode() in log.read()

        try:
            wait_until(ready, timeout, f"the agent worker (log: {self.log_path})")
        except BaseException:
            self.kill()
            raise
        return self

"""Real Chromium (Playwright's sync API) against a real daphne on the test database.

Each test gets a fresh browser; the server runs for the whole class. While
Playwright's sync API is active its event loop counts as running, so test
code reads the database through the HTTP API (`self.api`) rather than the ORM.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

from tests.base import PASSWORD, ChatTransactionTestCase
from tests.live import ARTIFACTS, DaphneServer, HttpSession
from tests.services import chromium_path

SCREENSHOTS = ARTIFACTS / "screenshots"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
TIMEOUT_MS = 30_000
# Hosts a page may load anything from: the test's daphne only (nothing from a CDN).
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
# URLs with no host that never leave the browser.
LOCAL_SCHEMES = {"data", "blob", "about", "chrome-error"}
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}

# The words of the assistant's answer as shown: the text of its Markdown pieces.
ANSWER_WORDS_JS = (
    """(el) => [...el.querySelectorAll('.md')].map(n => n.textContent).join(' ').split(/\\s+/).filter(Boolean)"""
)


def words(text: str) -> list[str]:
    return text.split()


def leaves_the_machine(url: str) -> bool:
    """True when loading `url` would go to a host other than this machine's loopback."""
    parts = urlsplit(url)
    if parts.scheme in LOCAL_SCHEMES:
        return False
    return parts.hostname not in LOCAL_HOSTS


class BrowserTestCase(ChatTransactionTestCase):
    """A daphne server for the class, a Chromium per test, and screenshots of each step."""

    server_env = {"LOCAL_MODEL_DELAY_MS": "40", "CHAT_MESSAGES_PER_MINUTE": "1000"}
    server: DaphneServer

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.executable = chromium_path()
        cls.server = DaphneServer(env=cls.server_env, name=f"daphne-browser-{cls.__name__}")
        cls.server.start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()
        super().tearDownClass()

    def setUp(self) -> None:
        super().setUp()
        self.alice = self.make_user("alice")
        self.staff = self.make_user("root", is_staff=True, is_superuser=True)
        self.shot_count = 0
        self._async_unsafe = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
        # Playwright keeps its loop running; the flush after each test uses the ORM.
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
        self.playwright: Playwright = sync_playwright().start()
        self.browser: Browser = self.playwright.chromium.launch(executable_path=self.executable, args=CHROMIUM_ARGS)
        self.contexts: list[BrowserContext] = []
        self.page_errors: list[str] = []
        self.csp_violations: list[str] = []  # Content-Security-Policy refusals Chromium reported
        self.requests: list[str] = []  # every URL any page of the test asked for (HTTP and WebSocket)
        self.api = HttpSession(self.server.base_url)
        self.api.login("alice", PASSWORD)

    def tearDown(self) -> None:
        try:
            for context in self.contexts:
                context.close()
            self.browser.close()
            self.playwright.stop()
        finally:
            if self._async_unsafe is None:
                os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
            else:
                os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = self._async_unsafe
            super().tearDown()
        self.assertEqual(self.page_errors, [], "the page raised JavaScript errors")
        self.assertEqual(self.csp_violations, [], "the Content-Security-Policy blocked something a page needs")
        self.assertTrue(self.requests, "no request was recorded: the network check is not wired")
        self.assertEqual(
            [url for url in self.requests if leaves_the_machine(url)],
            [],
            "the page loaded something from outside 127.0.0.1 (a CDN?)",
        )

    # --- browser helpers ---------------------------------------------------

    def new_page(self, viewport: dict | None = None, color_scheme: str = "light") -> Page:
        context = self.browser.new_context(
            viewport=viewport or DESKTOP, color_scheme=color_scheme, base_url=self.server.base_url
        )
        context.set_default_timeout(TIMEOUT_MS)
        self.contexts.append(context)
        # Every request of every page and worker of the context, checked in tearDown.
        context.on("request", lambda request: self.requests.append(request.url))
        context.on("page", self._watch_page)
        page = context.new_page()
        return page

    def _watch_page(self, page: Page) -> None:
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        page.on(
            "console",
            lambda message: "Content Security Policy" in message.text and self.csp_violations.append(message.text),
        )
        page.on("websocket", lambda ws: self.requests.append(ws.url))

    def login(self, page: Page, username: str = "alice", next_path: str = "/") -> None:
        """Log in through the login form, as a person would."""
        page.goto(f"/accounts/login/?next={next_path}")
        page.get_by_test_id("login-username").fill(username)
        page.get_by_test_id("login-password").fill(PASSWORD)
        page.get_by_test_id("login-submit").click()
        page.wait_for_url(re.compile(re.escape(next_path) + "$"))

    def open_chat(self, viewport: dict | None = None, color_scheme: str = "light") -> Page:
        page = self.new_page(viewport, color_scheme)
        self.login(page)
        self.wait_ready(page)
        return page

    def wait_ready(self, page: Page) -> None:
        """Wait until the page's script has set up its handlers."""
        expect(page.get_by_test_id("app")).to_have_attribute("data-ready", "true")

    def shot(self, page: Page, step: str) -> Path:
        """Save a screenshot of this step under test-artifacts/screenshots/."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.shot_count += 1
        name = f"{type(self).__name__}.{self._testMethodName}-{self.shot_count:02d}-{step}.png"
        path = SCREENSHOTS / name
        page.screenshot(path=str(path))
        return path

    def send(self, page: Page, text: str) -> None:
        """Type into the composer and press Enter."""
        box = page.get_by_test_id("composer-input")
        box.fill(text)
        box.press("Enter")

    def wait_connected(self, page: Page) -> None:
        expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "connected")

    def thread_id(self, page: Page) -> int:
        match = re.search(r"/threads/(\d+)/$", page.url)
        self.assertIsNotNone(match, f"no thread in the URL {page.url}")
        return int(match.group(1))

    def last_answer(self, page: Page):
        return page.locator("[data-testid=message][data-role=assistant]").last

    def wait_answer_length(self, page: Page, at_least: int) -> None:
        """Wait until the last answer shows at least `at_least` code points while still streaming."""
        page.wait_for_function(
            """(n) => { const m = [...document.querySelectorAll('[data-testid=message][data-role=assistant]')].at(-1);
                         return m && m.dataset.status === 'streaming' && Number(m.dataset.length) >= n; }""",
            arg=at_least,
        )

    def answer_words(self, page: Page) -> list[str]:
        return self.last_answer(page).evaluate(ANSWER_WORDS_JS)

    # --- API helpers -------------------------------------------------------

    def api_thread(self, thread_id: int) -> dict:
        status, body = self.api.get(f"/api/threads/{thread_id}/")
        self.assertEqual(status, 200, body)
        return body

    def api_last_answer(self, thread_id: int) -> dict:
        messages = [m for m in self.api_thread(thread_id)["messages"] if m["role"] == "assistant"]
        self.assertTrue(messages, "the thread has no assistant message")
        return messages[-1]

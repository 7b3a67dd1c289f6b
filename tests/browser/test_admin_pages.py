"""The admin's staff pages in Chromium: Live turns (with cancel), Usage chart, and safe message text."""

from __future__ import annotations

from playwright.sync_api import expect

from chat import turns
from chat.models import Message, Thread
from tests.browser.base import DESKTOP, PHONE, BrowserTestCase, words

LONG_TURN_WORDS = 6000
XSS = "<img src=x onerror=window.__xss=1> and <script>window.__xss=2</script> end"

CANVAS_HAS_INK_JS = """(canvas) => {
  const { data } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
  let painted = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i] !== 0) painted += 1;
  return painted;
}"""


class AdminPagesTests(BrowserTestCase):
    def test_live_turns_shows_a_running_turn_and_cancels_it_for_the_user(self):
        """Staff see alice's turn grow on Live turns; Cancel stops it and alice's page shows it cancelled."""
        page = self.open_chat()
        # Long enough (~4 min at 40 ms a word) to still run however slow the machine; the test cancels it.
        self.send(page, f"/lorem {LONG_TURN_WORDS}")
        self.wait_answer_length(page, 30)
        thread_id = self.thread_id(page)

        staff = self.new_page()
        self.login(staff, "root", "/admin/chat/message/live/")
        turn = staff.locator("[data-testid=live-turn][data-status=streaming]")
        expect(turn).to_have_count(1)
        expect(turn.get_by_test_id("live-user")).to_have_text("alice")
        first_length = int(turn.get_by_test_id("live-length").inner_text().split()[0])
        staff.wait_for_function(
            """(n) => { const el = document.querySelector('[data-testid=live-turn][data-status=streaming] [data-testid=live-length]');
                         return el && parseInt(el.textContent) > n; }""",
            arg=first_length,
        )
        self.shot(staff, "live-running")
        # The text grew through the socket's pushes: the page did not poll.
        expect(staff.get_by_test_id("live-turns")).to_have_attribute("data-mode", "socket")
        self.assertEqual([url for url in self.requests if "/live/data/" in url], [])

        # Still running when staff cancel it: the cancel, not the end of the text, stops it.
        self.assertEqual(self.api_last_answer(thread_id)["status"], "streaming")
        turn.get_by_test_id("live-cancel").click()
        answer = self.last_answer(page)
        expect(answer).to_have_attribute("data-status", "cancelled")
        expect(answer.get_by_test_id("message-notice")).to_be_visible()
        expect(answer.get_by_test_id("message-notice")).to_contain_text("Stopped")
        expect(page.get_by_test_id("stop")).to_be_hidden()
        expect(staff.locator("[data-testid=live-turn][data-status=cancelled]")).to_have_count(1)
        self.shot(staff, "live-cancelled")
        self.shot(page, "user-sees-cancelled")
        stored = self.api_last_answer(thread_id)
        self.assertEqual(stored["status"], "cancelled")
        self.assertTrue(stored["metadata"]["cancelled"])
        self.assertLess(len(words(stored["content"])), LONG_TURN_WORDS)
        self.assertEqual(self.answer_words(page), words(stored["content"]))

    def test_live_turns_polls_while_its_socket_is_down_and_still_cancels(self):
        """With the staff socket refused, Live turns reads every second: the turn still grows and Cancel stops it."""
        page = self.open_chat()
        self.send(page, f"/lorem {LONG_TURN_WORDS}")
        self.wait_answer_length(page, 30)
        thread_id = self.thread_id(page)

        staff = self.new_page()
        staff.route_web_socket("**/ws/staff/live/", lambda ws: ws.close())
        self.login(staff, "root", "/admin/chat/message/live/")
        expect(staff.get_by_test_id("live-turns")).to_have_attribute("data-mode", "polling")
        turn = staff.locator("[data-testid=live-turn][data-status=streaming]")
        expect(turn).to_have_count(1)
        first_length = int(turn.get_by_test_id("live-length").inner_text().split()[0])
        staff.wait_for_function(
            """(n) => { const el = document.querySelector('[data-testid=live-turn][data-status=streaming] [data-testid=live-length]');
                         return el && parseInt(el.textContent) > n; }""",
            arg=first_length,
        )
        self.assertTrue([url for url in self.requests if "/live/data/" in url], "the page did not poll")
        self.shot(staff, "live-polling")
        turn.get_by_test_id("live-cancel").click()
        expect(self.last_answer(page)).to_have_attribute("data-status", "cancelled")
        expect(staff.locator("[data-testid=live-turn][data-status=cancelled]")).to_have_count(1)
        self.assertEqual(self.api_last_answer(thread_id)["status"], "cancelled")

    def test_usage_page_draws_its_chart_and_tables(self):
        """After a turn, the Usage page shows its tokens in a drawn chart and in the tables."""
        page = self.open_chat()
        self.send(page, "what is 2+3*4")
        expect(self.last_answer(page)).to_have_attribute("data-status", "completed")
        stored = self.api_last_answer(self.thread_id(page))
        self.assertIsNotNone(stored["usage"])

        staff = self.new_page()
        self.login(staff, "root", "/admin/chat/tokenusage/report/")
        expect(staff.get_by_test_id("usage-total-tokens")).to_have_text(str(stored["usage"]["total_tokens"]))
        expect(staff.get_by_test_id("usage-per-user")).to_contain_text("alice")
        expect(staff.get_by_test_id("usage-per-model")).to_contain_text(stored["usage"]["model"])
        canvas = staff.get_by_test_id("usage-chart")
        staff.wait_for_function(
            f"() => ({CANVAS_HAS_INK_JS})(document.querySelector('[data-testid=usage-chart]')) > 500"
        )
        self.assertGreater(canvas.evaluate(CANVAS_HAS_INK_JS), 500)
        self.shot(staff, "usage")

    def test_admin_shows_html_in_messages_as_text(self):
        """A message with `<img onerror>` and `<script>` is plain text in the message list and page."""
        page = self.open_chat()
        self.send(page, XSS)
        expect(self.last_answer(page)).to_have_attribute("data-status", "completed")
        user_message = self.api_thread(self.thread_id(page))["messages"][0]

        staff = self.new_page()
        self.login(staff, "root", "/admin/chat/message/?q=onerror")
        expect(staff.locator("#result_list")).to_contain_text("<img src=x onerror=window.__xss=1>")
        self.shot(staff, "message-list")
        staff.goto(f"/admin/chat/message/{user_message['id']}/change/")
        text = staff.locator("pre.chat-pre-text")
        expect(text).to_have_text(XSS)
        self.assertEqual(staff.locator("#content img[src=x]").count(), 0)
        self.assertFalse(staff.evaluate("[...document.scripts].some(s => s.textContent.includes('__xss'))"))
        self.assertIsNone(staff.evaluate("window.__xss"))
        self.shot(staff, "message-page")

    def test_staff_pages_are_closed_to_users_who_are_not_staff(self):
        """alice is sent to the admin login instead of seeing Live turns, its data or Usage."""
        page = self.open_chat()
        for path in ("/admin/chat/message/live/", "/admin/chat/message/live/data/", "/admin/chat/tokenusage/report/"):
            page.goto(path)
            self.assertIn("/admin/login/", page.url, path)


LONG_WORD = "https://example.invalid/" + "a" * 300  # no space to break at
LONG_TEXT = "Lorem ipsum dolor sit amet " * 60 + LONG_WORD


class AdminLayoutTests(BrowserTestCase):
    def make_rows(self) -> Message:
        """A thread with a long title, long messages (one unbreakable word), a streaming answer and usage."""
        thread = Thread.objects.create(owner=self.alice, title="A thread whose title goes on and on " * 5)
        turns.persist_user_turn(thread.pk, "t-1", LONG_TEXT)
        answer = turns.persist_assistant_shell(thread.pk, "t-1", agent="local", model="local").id
        turns.append_content(answer, LONG_TEXT)
        turns.start_action(answer, "call-1", "calculator", {"expression": "1+" * 100 + "1"})
        usage = {"model": "gpt-4o-mini", "prompt_tokens": 1200, "completion_tokens": 800, "total_tokens": 2000}
        turns.finalize_assistant_turn(answer, "completed", usage)
        turns.persist_user_turn(thread.pk, "t-2", "and now " + LONG_WORD)
        turns.persist_assistant_shell(thread.pk, "t-2", agent="local", model="local")
        return Message.objects.get(pk=answer)

    def assert_readable(self, page, name: str) -> None:
        """No page-wide sideways scroll; at desktop width every column of the list is in view; previews are one line."""
        self.assertLessEqual(
            page.evaluate("document.documentElement.scrollWidth"), page.evaluate("window.innerWidth") + 1, name
        )
        if page.viewport_size["width"] >= 1280:
            table = page.locator("#result_list")
            fits = table.evaluate("t => t.scrollWidth <= t.parentElement.clientWidth + 1")
            self.assertTrue(fits, f"{name}: the list's right-hand columns are cut off at 1280 px")
        for cell in page.locator("#result_list .chat-preview").all():
            self.assertLessEqual(cell.evaluate("c => c.getBoundingClientRect().height"), 40, f"{name}: a preview wraps")

    def test_staff_lists_are_readable_at_desktop_and_phone_width(self):
        """Messages, tool calls, usage and threads: every column in view at 1280 px, one-line previews, phone too."""
        answer = self.make_rows()
        lists = {
            "messages": "/admin/chat/message/",
            "actions": "/admin/chat/agentaction/",
            "usage": "/admin/chat/tokenusage/",
            "threads": "/admin/chat/thread/",
        }
        for viewport, label in ((DESKTOP, "desktop"), (PHONE, "phone")):
            staff = self.new_page(viewport)
            self.login(staff, "root", "/admin/")
            for name, path in lists.items():
                staff.goto(path)
                expect(staff.locator("#result_list")).to_be_visible()
                self.shot(staff, f"{name}-{label}")
                self.assert_readable(staff, f"{name} at {label}")
            previews = staff.goto("/admin/chat/message/") and staff.locator("#result_list .chat-preview")
            expect(previews.first).to_contain_text("…")
            staff.goto(f"/admin/chat/message/{answer.pk}/change/")
            expect(staff.locator("pre.chat-pre-text")).to_have_text(LONG_TEXT)
            self.assertLessEqual(
                staff.evaluate("document.documentElement.scrollWidth"), staff.evaluate("window.innerWidth") + 1
            )
            self.shot(staff, f"message-page-{label}")
            staff.goto(f"/admin/chat/thread/{answer.thread_id}/change/")
            expect(staff.get_by_test_id("thread-all-messages")).to_contain_text("All 4")
            self.shot(staff, f"thread-page-{label}")
            staff.goto("/admin/chat/message/live/")
            expect(staff.locator("[data-testid=live-turn][data-status=streaming]")).to_have_count(1)
            self.assertLessEqual(
                staff.evaluate("document.documentElement.scrollWidth"), staff.evaluate("window.innerWidth") + 1
            )
            self.shot(staff, f"live-{label}")

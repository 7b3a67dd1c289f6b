"""The chat page in Chromium: threads, streaming, Stop, reload, reconnect and safe rendering."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from chat.turns import append_content, finalize_assistant_turn, persist_assistant_shell, persist_user_turn
from tests.browser.base import PHONE, BrowserTestCase, words
from tests.services import wait_until

XSS = "<img src=x onerror=window.__xss=1> and <script>window.__xss=2</script> end"

# Runs before the page's scripts: keeps every WebSocket the page opens in window.__sockets.
TRACK_SOCKETS_JS = """(() => {
  const Native = window.WebSocket;
  window.__sockets = [];
  window.WebSocket = class extends Native {
    constructor(...args) { super(...args); window.__sockets.push(this); }
  };
})();"""

# Records each connection state the page shows, with the last answer's state at that moment.
RECORD_CONNECTION_JS = """() => {
  window.__conn = [];
  const status = document.querySelector('[data-testid=connection-status]');
  const record = () => {
    if (window.__conn.at(-1)?.state === status.dataset.state) return;
    const answer = [...document.querySelectorAll('[data-testid=message][data-role=assistant]')].at(-1);
    window.__conn.push({ state: status.dataset.state, label: status.textContent.trim(), online: navigator.onLine,
                         answerStatus: answer?.dataset.status, answerLength: Number(answer?.dataset.length) });
  };
  record();
  new MutationObserver(record).observe(status, { attributes: true, childList: true, subtree: true, characterData: true });
}"""

# Closes the page's one open socket, as a dropped connection would, without the browser going offline.
DROP_SOCKET_JS = """() => {
  const open = window.__sockets.filter((ws) => ws.readyState === WebSocket.OPEN);
  if (open.length !== 1) return { open: open.length };
  const answer = [...document.querySelectorAll('[data-testid=message][data-role=assistant]')].at(-1);
  open[0].close();
  return { open: 1, sockets: window.__sockets.length, answerStatus: answer.dataset.status,
           answerLength: Number(answer.dataset.length) };
}"""


class ChatPageTests(BrowserTestCase):
    def test_login_then_the_first_message_opens_its_thread_in_the_url(self):
        """Logging in leads to the chat page; the first message creates the thread, in the URL and the sidebar."""
        page = self.new_page()
        page.goto("/")
        expect(page).to_have_url(re.compile(r"/accounts/login/"))
        self.shot(page, "login-page")
        self.login(page)
        self.wait_ready(page)
        expect(page.get_by_test_id("welcome")).to_be_visible()
        self.shot(page, "logged-in")

        page.get_by_test_id("new-chat").click()
        self.send(page, "hello")
        expect(page).to_have_url(re.compile(r"/threads/\d+/$"))
        self.wait_connected(page)
        thread_id = self.thread_id(page)
        item = page.locator(f"[data-testid=thread-item][data-thread-id='{thread_id}']")
        expect(item).to_have_class(re.compile(r"\bactive\b"))
        status, body = self.api.get("/api/threads/")
        self.assertEqual(status, 200)
        self.assertEqual([t["id"] for t in body["threads"]], [thread_id])
        self.shot(page, "new-chat")

    def test_rename_and_delete_a_thread_from_the_sidebar(self):
        """Rename saves the title through the API; delete asks first, removes the thread and leaves it."""
        page = self.open_chat()
        self.send(page, "hello there")
        expect(page).to_have_url(re.compile(r"/threads/\d+/$"))
        thread_id = self.thread_id(page)
        expect(self.last_answer(page)).to_have_attribute("data-status", "completed")
        item = page.locator(f"[data-testid=thread-item][data-thread-id='{thread_id}']")
        item.hover()
        item.get_by_test_id("thread-rename").click()
        field = page.get_by_test_id("thread-rename-input")
        field.fill("Renamed <b>chat</b>")
        field.press("Enter")
        expect(item).to_contain_text("Renamed <b>chat</b>")
        expect(page.get_by_test_id("thread-title")).to_have_text("Renamed <b>chat</b>")
        wait_until(lambda: self.api_thread(thread_id)["title"] == "Renamed <b>chat</b>", 10, "the new title")
        self.shot(page, "renamed")

        item.hover()
        item.get_by_test_id("thread-delete").click()
        expect(page.get_by_test_id("confirm-dialog")).to_be_visible()
        self.shot(page, "confirm-delete")
        page.get_by_test_id("confirm-ok").click()
        expect(item).to_have_count(0)
        expect(page).to_have_url(re.compile(r"/$"))
        status, _ = self.api.get(f"/api/threads/{thread_id}/")
        self.assertEqual(status, 404)

    def test_calculator_turn_shows_the_tool_card_and_the_answer(self):
        """`what is 2+3*4` shows a calculator card (input, output, success) before an answer with 14."""
        page = self.open_chat()
        # Record what the thinking line shows while the turn runs.
        page.evaluate(
            """() => { window.__thinking = [];
                new MutationObserver(() => {
                  for (const el of document.querySelectorAll('[data-testid=thinking]'))
                    if (!el.hidden) window.__thinking.push(el.textContent);
                }).observe(document.body, { subtree: true, childList: true, attributes: true, characterData: true }); }"""
        )
        self.send(page, "what is 2+3*4")
        answer = self.last_answer(page)
        expect(answer).to_have_attribute("data-status", "completed")
        self.assertTrue(page.evaluate("window.__thinking.length > 0"), "agent_thinking was never shown")
        expect(answer.get_by_test_id("thinking")).to_be_hidden()
        card = answer.get_by_test_id("tool-card")
        expect(card).to_have_attribute("data-tool", "calculator")
        expect(card).to_have_attribute("data-status", "success")
        # A finished call shows how long it took, in its always-visible summary line.
        duration = card.locator("summary").get_by_test_id("tool-duration")
        expect(duration).to_be_visible()
        expect(duration).to_have_text(re.compile(r"^\d+(\.\d+)? (ms|s)$"))
        # Collapsed at first: the input and output are not shown until the card is opened.
        output = card.get_by_test_id("tool-output")
        self.assertFalse(card.evaluate("(el) => el.open"))
        expect(output).to_be_hidden()
        self.shot(page, "card-closed")
        card.locator("summary").click()
        page.wait_for_function("(el) => el.open", arg=card.element_handle())
        expect(output).to_be_visible()
        expect(card.get_by_test_id("tool-input")).to_be_visible()
        expect(card.get_by_test_id("tool-input")).to_contain_text("2+3*4")
        expect(output).to_contain_text("14")
        self.shot(page, "card-open")
        card.locator("summary").click()
        page.wait_for_function("(el) => !el.open", arg=card.element_handle())
        expect(output).to_be_hidden()
        card.locator("summary").click()
        page.wait_for_function("(el) => el.open", arg=card.element_handle())
        expect(output).to_be_visible()
        expect(answer.locator(".md")).to_contain_text("14")
        expect(answer.get_by_test_id("usage")).to_contain_text("tokens")
        # The card sits before the text that followed the call.
        order = answer.evaluate(
            "(el) => [...el.querySelector('[data-testid=message-content]').children].map(n => n.dataset.testid || 'text')"
        )
        self.assertEqual(order[0], "tool-card")
        self.shot(page, "calculator")

        stored = self.api_last_answer(self.thread_id(page))
        self.assertEqual(stored["actions"][0]["tool"], "calculator")
        self.assertEqual(answer.evaluate("(el) => el.dataset.messageId"), str(stored["id"]))

    def test_stop_mid_stream_leaves_page_and_database_with_the_same_partial_text(self):
        """Stop during `/lorem 300`: the page and the API show the same cancelled partial answer."""
        page = self.open_chat()
        self.send(page, "/lorem 300")
        self.wait_answer_length(page, 60)
        stop = page.get_by_test_id("stop")
        expect(stop).to_be_visible()
        self.shot(page, "streaming")
        stop.click()
        answer = self.last_answer(page)
        expect(answer).to_have_attribute("data-status", "cancelled")
        expect(answer.get_by_test_id("message-notice")).to_contain_text("Stopped")
        expect(stop).to_be_hidden()
        self.shot(page, "stopped")

        stored = self.api_last_answer(self.thread_id(page))
        self.assertEqual(stored["status"], "cancelled")
        self.assertTrue(stored["metadata"]["cancelled"])
        shown = self.answer_words(page)
        self.assertEqual(shown, words(stored["content"]))
        self.assertLess(len(shown), 300)
        self.assertGreater(len(shown), 5)

    def test_reload_mid_stream_continues_the_answer_without_duplicate_or_missing_words(self):
        """Reloading while `/lorem 300` streams resumes from the snapshot and ends with exactly the stored words."""
        page = self.open_chat()
        self.send(page, "/lorem 300")
        self.wait_answer_length(page, 120)
        thread_id = self.thread_id(page)
        page.reload()
        self.wait_connected(page)
        answer = self.last_answer(page)
        self.shot(page, "after-reload")
        expect(answer).to_have_attribute("data-status", "completed", timeout=60_000)
        self.shot(page, "completed")

        stored = self.api_last_answer(thread_id)
        self.assertEqual(stored["status"], "completed")
        shown = self.answer_words(page)
        self.assertEqual(len(words(stored["content"])), 300)
        self.assertEqual(shown, words(stored["content"]))

    def test_going_offline_and_back_reconnects_and_shows_the_answer_finished_meanwhile(self):
        """Cut off mid-answer, the page says so; back online it shows the answer that finished meanwhile, in full."""
        page = self.open_chat()
        self.send(page, "/lorem 250")
        self.wait_answer_length(page, 60)
        thread_id = self.thread_id(page)
        status = page.get_by_test_id("connection-status")
        page.context.set_offline(True)
        expect(status).to_have_attribute("data-state", re.compile("offline|reconnecting"))
        # The turn goes on, and ends, without the socket.
        wait_until(
            lambda: self.api_last_answer(thread_id)["status"] == "completed",
            60,
            "the answer to finish while the page is offline",
        )
        finished = self.api_last_answer(thread_id)["content"]
        self.assertLess(int(self.last_answer(page).get_attribute("data-length")), len(finished))
        expect(self.last_answer(page)).to_have_attribute("data-status", "streaming")
        self.shot(page, "offline")
        page.context.set_offline(False)
        expect(status).to_have_attribute("data-state", "connected")
        answer = self.last_answer(page)
        expect(answer).to_have_attribute("data-status", "completed", timeout=60_000)
        self.shot(page, "caught-up")

        stored = self.api_last_answer(thread_id)
        self.assertEqual(len(words(stored["content"])), 250)
        self.assertEqual(self.answer_words(page), words(stored["content"]))

    def test_a_dropped_socket_reconnects_with_backoff_and_finishes_the_answer_exactly(self):
        """The socket closes mid-answer while the browser stays online: the page says reconnecting,
        reconnects by itself (backoff path, not the online event) and ends with exactly the stored words."""
        page = self.new_page()
        page.add_init_script(TRACK_SOCKETS_JS)
        self.login(page)
        self.wait_ready(page)
        self.send(page, "/lorem 300")
        self.wait_answer_length(page, 60)
        self.wait_connected(page)
        thread_id = self.thread_id(page)
        page.evaluate(RECORD_CONNECTION_JS)

        dropped = page.evaluate(DROP_SOCKET_JS)
        self.assertEqual(dropped["open"], 1, "the page should have exactly one open socket")
        self.assertEqual(dropped["answerStatus"], "streaming", "the answer must still stream when the socket drops")
        stored = self.api_last_answer(thread_id)
        self.assertEqual(stored["status"], "streaming", "the turn must still run after the socket dropped")
        self.assertLess(len(words(stored["content"])), 300)
        self.shot(page, "socket-dropped")

        # The page shows 'reconnecting', then opens a new socket of its own accord.
        page.wait_for_function(
            """() => { const s = window.__conn.map((e) => e.state); const i = s.indexOf('reconnecting');
                       return i >= 0 && s.indexOf('connected', i) > i; }"""
        )
        history = page.evaluate("window.__conn")
        states = [entry["state"] for entry in history]
        self.assertNotIn("offline", states, history)
        reconnecting = history[states.index("reconnecting")]
        self.assertEqual(reconnecting["label"], "Reconnecting…")
        self.assertTrue(reconnecting["online"], "the browser must not have gone offline")
        self.assertEqual(reconnecting["answerStatus"], "streaming")
        self.assertGreater(page.evaluate("window.__sockets.length"), dropped["sockets"])
        self.shot(page, "reconnected")

        # Live deltas flow again on the new socket before the answer ends.
        length = int(self.last_answer(page).get_attribute("data-length"))
        self.wait_answer_length(page, length + 40)
        answer = self.last_answer(page)
        expect(answer).to_have_attribute("data-status", "completed", timeout=60_000)
        self.shot(page, "completed")

        stored = self.api_last_answer(thread_id)
        self.assertEqual(stored["status"], "completed")
        self.assertEqual(len(words(stored["content"])), 300)
        self.assertEqual(self.answer_words(page), words(stored["content"]))

    def test_sending_in_an_older_thread_moves_it_to_the_top_of_the_sidebar(self):
        """Threads are listed newest first; a new message in the older one puts it first, on the page and the API."""
        page = self.open_chat()
        self.send(page, "older thread")
        expect(self.last_answer(page)).to_have_attribute("data-status", "completed")
        older = self.thread_id(page)
        page.get_by_test_id("new-chat").click()
        expect(page).not_to_have_url(re.compile(rf"/threads/{older}/$"))
        self.send(page, "newer thread")
        expect(self.last_answer(page)).to_have_attribute("data-status", "completed")
        newer = self.thread_id(page)
        items = page.get_by_test_id("thread-item")
        order = "(els) => els.map((e) => Number(e.dataset.threadId))"
        expect(items).to_have_count(2)
        self.assertEqual(items.evaluate_all(order), [newer, older])
        self.shot(page, "newer-on-top")

        page.locator(f"[data-testid=thread-item][data-thread-id='{older}'] [data-testid=thread-link]").click()
        expect(page).to_have_url(re.compile(rf"/threads/{older}/$"))
        expect(page.locator("[data-testid=message][data-role=user] [data-testid=message-content]")).to_have_text(
            "older thread"
        )
        self.send(page, "back to the older one")
        expect(items.first).to_have_attribute("data-thread-id", str(older))
        self.assertEqual(items.evaluate_all(order), [older, newer])
        expect(self.last_answer(page)).to_have_attribute("data-status", "completed")
        self.shot(page, "older-moved-to-top")

        status, body = self.api.get("/api/threads/")
        self.assertEqual(status, 200)
        self.assertEqual([t["id"] for t in body["threads"]], [older, newer])
        page.reload()
        self.wait_ready(page)
        expect(items.first).to_have_attribute("data-thread-id", str(older))
        self.assertEqual(items.evaluate_all(order), [older, newer])

    def test_an_interrupted_answer_shows_a_notice_with_retry(self):
        """A turn the server finalized `interrupted` keeps its partial text, says what happened and offers Retry."""
        thread = self.make_thread(self.alice, "Interrupted chat")
        persist_user_turn(thread.id, "t-interrupted", "tell me a story")
        shell = persist_assistant_shell(thread.id, "t-interrupted", agent="local", model="local")
        append_content(shell.id, "Once upon a time ")
        append_content(shell.id, "there was a server")
        finalize_assistant_turn(
            shell.id,
            "interrupted",
            error={"code": "interrupted", "message": "The server stopped during the answer.", "retryable": True},
        )
        self.assertEqual(self.api_last_answer(thread.id)["status"], "interrupted")

        page = self.new_page()
        self.login(page, next_path=f"/threads/{thread.id}/")
        self.wait_ready(page)
        self.wait_connected(page)
        answer = self.last_answer(page)
        expect(answer).to_have_attribute("data-status", "interrupted")
        expect(answer.locator(".md")).to_have_text("Once upon a time there was a server")
        notice = answer.get_by_test_id("message-notice")
        expect(notice).to_be_visible()
        expect(notice).to_have_attribute("data-kind", "warn")
        expect(notice).to_contain_text("interrupted before it finished")
        retry = notice.get_by_test_id("retry")
        expect(retry).to_be_visible()
        expect(page.get_by_test_id("stop")).to_be_hidden()
        self.shot(page, "interrupted")

        retry.click()
        users = page.locator("[data-testid=message][data-role=user]")
        expect(users).to_have_count(2)
        expect(users.last.get_by_test_id("message-content")).to_have_text("tell me a story")
        expect(self.last_answer(page)).to_have_attribute("data-status", "completed")
        # Retry belongs to the newest answer only: the interrupted one keeps its notice, without the button.
        old = page.locator(f"[data-testid=message][data-message-id='{shell.id}']")
        expect(old.get_by_test_id("message-notice")).to_contain_text("interrupted before it finished")
        expect(old.get_by_test_id("retry")).to_have_count(0)
        self.shot(page, "retried")
        stored = self.api_thread(thread.id)["messages"]
        self.assertEqual([m["role"] for m in stored], ["user", "assistant", "user", "assistant"])
        self.assertEqual(stored[2]["content"], "tell me a story")
        self.assertNotEqual(stored[2]["turn_id"], "t-interrupted")

    def test_sending_while_offline_keeps_the_text_in_the_composer(self):
        """A message that cannot be sent stays in the input, with an error shown."""
        page = self.open_chat()
        self.send(page, "first")
        expect(self.last_answer(page)).to_have_attribute("data-status", "completed")
        self.wait_connected(page)
        page.context.set_offline(True)
        expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "offline")
        self.send(page, "this must not be lost")
        expect(page.get_by_test_id("toast")).to_contain_text("not sent")
        expect(page.get_by_test_id("composer-input")).to_have_value("this must not be lost")
        self.shot(page, "not-sent")
        page.context.set_offline(False)
        self.wait_connected(page)
        page.get_by_test_id("send").click()
        expect(page.locator("[data-testid=message][data-role=user] [data-testid=message-content]").last).to_have_text(
            "this must not be lost"
        )
        expect(page.get_by_test_id("composer-input")).to_have_value("")

    def test_html_in_a_message_is_shown_as_text_and_never_runs(self):
        """`<img onerror>` and `<script>` in a message and its echo appear as text; no script runs."""
        page = self.open_chat()
        self.send(page, XSS)
        answer = self.last_answer(page)
        expect(answer).to_have_attribute("data-status", "completed")
        user = page.locator("[data-testid=message][data-role=user]").last
        expect(user).to_contain_text("<img src=x onerror=window.__xss=1>")
        expect(user).to_contain_text("<script>window.__xss=2</script>")
        expect(answer).to_contain_text("<img src=x onerror=window.__xss=1>")
        self.assertEqual(page.locator("[data-testid=message-list] img, [data-testid=message-list] script").count(), 0)
        self.assertIsNone(page.evaluate("window.__xss"))
        self.shot(page, "html-as-text")

    def test_failed_turn_shows_its_error_and_retry_sends_the_question_again(self):
        """`/fail 3` ends with a readable error and a Retry button that starts a new turn with the same text."""
        page = self.open_chat()
        self.send(page, "/fail 3")
        answer = self.last_answer(page)
        expect(answer).to_have_attribute("data-status", "failed")
        notice = answer.get_by_test_id("message-notice")
        expect(notice).to_contain_text("Something went wrong")
        self.shot(page, "failed")
        notice.get_by_test_id("retry").click()
        expect(page.locator("[data-testid=message][data-role=user]")).to_have_count(2)
        expect(page.locator("[data-testid=message][data-role=assistant][data-status=failed]")).to_have_count(2)
        turn_ids = page.locator("[data-testid=message][data-role=user]").evaluate_all(
            "(els) => els.map(e => e.dataset.turnId)"
        )
        self.assertEqual(len(set(turn_ids)), 2)
        self.shot(page, "retried")

    def test_phone_width_in_dark_mode_collapses_the_sidebar_into_a_drawer(self):
        """At a phone's width the sidebar is hidden until the menu button opens it; dark colours apply."""
        page = self.open_chat(viewport=PHONE, color_scheme="dark")
        sidebar = page.get_by_test_id("sidebar")
        self.assertFalse(sidebar.evaluate("(el) => el.getBoundingClientRect().right > 0"))
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        self.assertEqual(background, "rgb(33, 33, 33)")
        self.send(page, "what is 2+3*4")
        expect(self.last_answer(page)).to_have_attribute("data-status", "completed")
        self.shot(page, "phone-dark-answer")
        page.get_by_test_id("sidebar-open").click()
        expect(page.get_by_test_id("thread-item")).to_be_visible()
        page.wait_for_function(
            "() => document.querySelector('[data-testid=sidebar]').getBoundingClientRect().left >= 0"
        )
        self.shot(page, "phone-dark-drawer")
        page.get_by_test_id("thread-link").click()
        page.wait_for_function(
            "() => document.querySelector('[data-testid=sidebar]').getBoundingClientRect().right <= 0"
        )

    def test_enter_sends_and_shift_enter_adds_a_line(self):
        """Shift+Enter makes a new line in the composer; Enter sends the whole text."""
        page = self.open_chat()
        box = page.get_by_test_id("composer-input")
        box.type("line one")
        box.press("Shift+Enter")
        box.type("line two")
        expect(box).to_have_value("line one\nline two")
        box.press("Enter")
        user = page.locator("[data-testid=message][data-role=user] [data-testid=message-content]")
        expect(user).to_have_text("line one\nline two")
        expect(box).to_have_value("")

    def test_autoscroll_follows_the_answer_until_the_reader_scrolls_up(self):
        """The view sticks to the bottom while streaming; scrolling up stops it; the jump button resumes it."""
        page = self.open_chat(viewport={"width": 1000, "height": 520})
        self.send(page, "/lorem 600")
        scroller = page.get_by_test_id("scroller")
        at_bottom = "(el) => el.scrollHeight - el.scrollTop - el.clientHeight < 4"
        page.wait_for_function(
            "() => { const el = document.querySelector('[data-testid=scroller]'); return el.scrollHeight > el.clientHeight + 300; }"
        )
        self.assertTrue(scroller.evaluate(at_bottom))
        scroller.hover()
        page.mouse.wheel(0, -200)  # from the bottom of 300+ px of overflow: still below the top
        page.wait_for_function("() => document.querySelector('[data-testid=scroller]').scrollTop > 0")
        expect(page.get_by_test_id("jump-bottom")).to_be_visible()
        top = scroller.evaluate("(el) => el.scrollTop")
        length = int(self.last_answer(page).get_attribute("data-length"))
        self.wait_answer_length(page, length + 150)
        self.assertEqual(scroller.evaluate("(el) => el.scrollTop"), top)
        self.shot(page, "scrolled-up")
        page.get_by_test_id("jump-bottom").click()
        page.wait_for_function(f"() => ({at_bottom})(document.querySelector('[data-testid=scroller]'))")
        length = int(self.last_answer(page).get_attribute("data-length"))
        self.wait_answer_length(page, length + 100)
        self.assertTrue(scroller.evaluate(at_bottom))
        page.get_by_test_id("stop").click()

    def test_back_and_forward_switch_between_threads(self):
        """The open thread follows the URL through history navigation and reloads."""
        page = self.open_chat()
        self.send(page, "first thread")
        expect(self.last_answer(page)).to_have_attribute("data-status", "completed")
        first = self.thread_id(page)
        page.get_by_test_id("new-chat").click()
        expect(page).not_to_have_url(re.compile(rf"/threads/{first}/$"))
        self.send(page, "second thread")
        expect(self.last_answer(page)).to_have_attribute("data-status", "completed")
        second = self.thread_id(page)
        page.go_back()
        expect(page).to_have_url(re.compile(rf"/threads/{first}/$"))
        expect(page.locator("[data-testid=message][data-role=user] [data-testid=message-content]")).to_have_text(
            "first thread"
        )
        page.go_forward()
        expect(page).to_have_url(re.compile(rf"/threads/{second}/$"))
        expect(page.locator("[data-testid=message][data-role=user] [data-testid=message-content]")).to_have_text(
            "second thread"
        )
        page.reload()
        expect(page.locator("[data-testid=message][data-role=user] [data-testid=message-content]")).to_have_text(
            "second thread"
        )
        self.shot(page, "second-thread")

    def test_markdown_answers_get_code_blocks_with_copy_and_lose_raw_html_and_script_links(self):
        """Code blocks get a Copy button that copies the code; raw HTML shows as text; javascript: links lose href."""
        page = self.open_chat()
        page.context.grant_permissions(["clipboard-read", "clipboard-write"])
        # The page redraws its message list when the thread list and the agents arrive: wait for both first.
        expect(page.get_by_test_id("thread-list")).to_contain_text("No conversations yet.")
        expect(page.get_by_test_id("agent-picker").locator("option")).to_have_count(1)
        page.evaluate(
            """async (content) => {
                const { MessageView } = await import('/static/chat/views.js');
                const message = { id: 1, role: 'assistant', status: 'completed', turn_id: 't', content,
                                  metadata: {}, actions: [], usage: null };
                const view = new MessageView(message, { openCards: new Set(), isLast: () => true });
                view.update(message, '');
                document.getElementById('messages').append(view.root);
            }""",
            "Code:\n\n```python\nprint('hi')\n```\n\n<img src=x onerror=window.__xss=1> [bad](javascript:window.__xss=3)",
        )
        block = page.locator(".code-block")
        expect(block.locator(".code-head")).to_contain_text("python")
        block.get_by_test_id("copy-code").click()
        expect(block.get_by_test_id("copy-code")).to_contain_text("Copied")
        self.assertEqual(page.evaluate("navigator.clipboard.readText()"), "print('hi')\n")
        answer = page.locator("[data-testid=message]")
        expect(answer).to_contain_text("<img src=x onerror=window.__xss=1>")
        self.assertEqual(answer.locator("img").count(), 0)
        self.assertIsNone(answer.locator("a", has_text="bad").get_attribute("href"))
        self.shot(page, "markdown")


class RateLimitedChatPageTests(BrowserTestCase):
    server_env = {"LOCAL_MODEL_DELAY_MS": "5", "CHAT_MESSAGES_PER_MINUTE": "1"}

    def test_a_refused_message_stays_in_the_composer_with_the_wait_shown(self):
        """Past the per-minute limit the server refuses the message: the text stays and the wait is shown."""
        page = self.open_chat()
        self.send(page, "first message")
        expect(self.last_answer(page)).to_have_attribute("data-status", "completed")
        self.send(page, "second message")
        expect(page.get_by_test_id("toast")).to_contain_text(re.compile(r"too quickly\. Try again in \d+ s"))
        expect(page.get_by_test_id("composer-input")).to_have_value("second message")
        expect(page.locator("[data-testid=message][data-role=user]")).to_have_count(1)
        self.shot(page, "rate-limited")

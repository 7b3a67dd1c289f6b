"""The chat page's versions, edit, regenerate, agents, prompts, search, export, import, code and math, in Chromium."""

from __future__ import annotations

import json
import re
import time

from playwright.sync_api import expect

from chat.models import Agent
from tests.browser.base import BrowserTestCase

# The WCAG contrast ratio of an element's text colour against the page's background.
CONTRAST_JS = """(el) => {
  const rgb = (s) => s.match(/\\d+(\\.\\d+)?/g).slice(0, 3).map(Number);
  const lum = ([r, g, b]) => {
    const c = [r, g, b].map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  };
  let node = el, bg = 'rgba(0, 0, 0, 0)';
  while (node && (bg === 'rgba(0, 0, 0, 0)' || bg === 'transparent')) {
    bg = getComputedStyle(node).backgroundColor; node = node.parentElement;
  }
  if (bg === 'rgba(0, 0, 0, 0)') bg = 'rgb(255, 255, 255)';
  const [a, b] = [lum(rgb(getComputedStyle(el).color)), lum(rgb(bg))].sort((x, y) => y - x);
  return (a + 0.05) / (b + 0.05);
}"""


class ChatFeatureTests(BrowserTestCase):
    server_env = {"LOCAL_MODEL_DELAY_MS": "15", "CHAT_MESSAGES_PER_MINUTE": "1000"}

    def answered(self, page, text: str) -> None:
        """Send `text` and wait for its answer to complete."""
        count = page.locator("[data-testid=message][data-role=assistant]").count()
        self.send(page, text)
        expect(page.locator("[data-testid=message][data-role=assistant]")).to_have_count(count + 1)
        expect(self.last_answer(page)).to_have_attribute("data-status", "completed")

    def test_new_chat_stores_no_thread_until_the_first_message(self):
        """New chat opens an empty page without creating a thread; the first message creates it."""
        page = self.open_chat()
        self.answered(page, "hello")
        page.get_by_test_id("new-chat").click()
        expect(page).to_have_url(re.compile(r"/$"))
        page.get_by_test_id("new-chat").click()
        self.assertEqual(len(self.api.get("/api/threads/")[1]["threads"]), 1)
        self.answered(page, "second chat")
        expect(page).to_have_url(re.compile(r"/threads/\d+/$"))
        self.assertEqual(len(self.api.get("/api/threads/")[1]["threads"]), 2)

    def test_regenerate_edit_and_version_arrows(self):
        """Regenerate gives '2 / 2' on the answer, the arrows switch; Edit sends a new version of the question."""
        page = self.open_chat()
        self.answered(page, "first question")
        thread_id = self.thread_id(page)
        first_answer = self.api_last_answer(thread_id)
        page.get_by_test_id("regenerate").last.click()
        expect(self.last_answer(page).get_by_test_id("version-label")).to_have_text("2 / 2")
        expect(self.last_answer(page)).to_have_attribute("data-status", "completed")
        self.shot(page, "regenerated")
        self.last_answer(page).get_by_test_id("version-previous").click()
        expect(self.last_answer(page).get_by_test_id("version-label")).to_have_text("1 / 2")
        expect(self.last_answer(page)).to_have_attribute("data-message-id", str(first_answer["id"]))
        self.last_answer(page).get_by_test_id("version-next").click()
        expect(self.last_answer(page).get_by_test_id("version-label")).to_have_text("2 / 2")

        question = page.locator("[data-testid=message][data-role=user]").first
        question.get_by_test_id("edit").click()
        page.get_by_test_id("edit-input").fill("edited question")
        self.shot(page, "editing")
        page.get_by_test_id("edit-save").click()
        question = page.locator("[data-testid=message][data-role=user]").first
        expect(question.get_by_test_id("message-content")).to_have_text("edited question")
        expect(question.get_by_test_id("version-label")).to_have_text("2 / 2")
        expect(self.last_answer(page)).to_have_attribute("data-status", "completed")
        expect(self.last_answer(page)).to_contain_text("edited question")
        expect(page.get_by_test_id("load-earlier")).to_have_count(0)  # the edit is a first message
        self.shot(page, "edited")
        path = self.api_thread(thread_id)["messages"]
        self.assertEqual([m["content"] for m in path][0], "edited question")
        self.assertEqual(len(path), 2)
        question.get_by_test_id("version-previous").click()
        expect(page.locator("[data-testid=message][data-role=user]").first).to_have_text(re.compile("first question"))

    def test_agent_picker_and_system_prompt_per_chat(self):
        """A chat started with the 'Shouty' agent answers in capitals; another gets its prompt from the dialog."""
        Agent.objects.create(name="Shouty", model="local-shout", system_prompt="Reply in capitals.", tools=[])
        page = self.open_chat()
        picker = page.get_by_test_id("agent-picker")
        expect(picker.locator("option")).to_have_count(2)
        picker.select_option(label="Shouty (local-shout)")
        self.answered(page, "quiet words")
        expect(self.last_answer(page)).to_contain_text("QUIET WORDS")
        thread = self.api_thread(self.thread_id(page))
        self.assertEqual(thread["agent"], Agent.objects.get(name="Shouty").pk)
        self.shot(page, "agent-chosen")

        page.get_by_test_id("new-chat").click()
        expect(picker).to_have_value(str(Agent.objects.get(is_default=True).pk))
        self.answered(page, "soft words")
        page.get_by_test_id("prompt-open").click()
        page.get_by_test_id("prompt-input").fill("please reply in capitals")
        self.shot(page, "prompt-dialog")
        # The save is held on its way: a message sent meanwhile waits for it, so it runs with the new prompt.
        held = []
        page.route(
            re.compile(r"/api/threads/\d+/$"),
            lambda route: held.append(route) if route.request.method == "PATCH" else route.continue_(),
        )
        page.get_by_test_id("prompt-save").click()
        count = page.locator("[data-testid=message][data-role=assistant]").count()
        self.send(page, "more soft words")
        deadline = time.monotonic() + 10
        while not held and time.monotonic() < deadline:
            page.wait_for_timeout(20)  # until the route has the save in hand
        self.assertTrue(held, "the prompt's save reached the route")
        held[0].continue_()
        expect(page.locator("[data-testid=message][data-role=assistant]")).to_have_count(count + 1)
        expect(self.last_answer(page)).to_have_attribute("data-status", "completed")
        expect(self.last_answer(page)).to_contain_text("MORE SOFT WORDS")
        self.assertEqual(self.api_thread(self.thread_id(page))["system_prompt"], "please reply in capitals")

    def test_search_result_opens_its_message(self):
        """Searching a word lists the message; clicking it opens that chat scrolled to the message, marked."""
        page = self.open_chat()
        self.answered(page, "the zebra question")
        target = self.thread_id(page)
        page.get_by_test_id("new-chat").click()
        self.answered(page, "something else entirely")
        page.get_by_test_id("search-input").fill("zebra")
        results = page.get_by_test_id("search-result")
        expect(results).to_have_count(2)  # the question and the answer that repeats it
        self.shot(page, "search-results")
        results.first.click()
        expect(page).to_have_url(re.compile(rf"/threads/{target}/$"))
        expect(page.locator("[data-testid=message].found")).to_have_count(1)
        expect(page.get_by_test_id("thread-list")).to_be_visible()
        page.get_by_test_id("search-input").fill("nothingmatches")
        expect(page.get_by_test_id("search-empty")).to_be_visible()

    def test_export_and_import_a_chat(self):
        """The export links give the JSON and Markdown; importing the JSON opens a copy of the chat."""
        page = self.open_chat()
        self.answered(page, "what is 6*7")
        thread_id = self.thread_id(page)
        link = page.get_by_test_id("export-json")
        expect(link).to_have_attribute("href", f"/api/threads/{thread_id}/export/?format=json")
        expect(page.get_by_test_id("export-markdown")).to_have_attribute(
            "href", f"/api/threads/{thread_id}/export/?format=markdown"
        )
        exported = page.request.get(f"/api/threads/{thread_id}/export/?format=json")
        self.assertEqual(exported.status, 200)
        body = exported.body()
        self.assertEqual(len(json.loads(body)["messages"]), 2)
        page.get_by_test_id("import-file").set_input_files(
            files=[{"name": "chat.json", "mimeType": "application/json", "buffer": body}]
        )
        expect(page).not_to_have_url(re.compile(rf"/threads/{thread_id}/$"))
        expect(page).to_have_url(re.compile(r"/threads/\d+/$"))
        expect(page.locator("[data-testid=message][data-role=user]")).to_have_text(re.compile("what is 6\\*7"))
        expect(self.last_answer(page)).to_contain_text("42")
        expect(self.last_answer(page).get_by_test_id("tool-card")).to_have_count(1)
        self.shot(page, "imported")

    def test_markdown_answer_has_code_colours_math_a_table_and_times(self):
        """/markdown: highlighted Python, KaTeX formulas, a table and lists; every message shows its time."""
        page = self.new_page()
        page.add_init_script(
            "window.__csp = []; document.addEventListener('securitypolicyviolation',"
            " (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
        )
        self.login(page)
        self.wait_ready(page)
        self.answered(page, "/markdown")
        answer = self.last_answer(page)
        expect(answer.locator("table")).to_have_count(1)
        expect(answer.locator("h2")).to_have_count(4)
        expect(answer.locator("pre code.hljs .hljs-keyword").first).to_be_visible()
        expect(answer.locator(".katex-display")).to_have_count(1)
        expect(answer.locator(".katex")).to_have_count(2)
        layout = answer.locator(".katex-display").evaluate(
            "(root) => root.querySelector('[style]')?.style.cssText ?? null"
        )
        self.assertTrue(layout)  # KaTeX sets its layout through the DOM, which the CSP allows
        self.assertEqual(page.evaluate("window.__csp"), [])
        for message in page.get_by_test_id("message").all():
            expect(message.get_by_test_id("message-time")).to_have_attribute("datetime", re.compile(r"^\d{4}-"))
        self.shot(page, "markdown")
        dark = self.open_chat(color_scheme="dark")
        dark.goto(page.url)
        expect(self.last_answer(dark).locator("pre code.hljs")).to_be_visible()
        self.shot(dark, "markdown-dark")

    def test_sending_while_an_answer_streams_says_it_stops_it_and_answers_are_announced(self):
        """While streaming, Send reads 'Stop the answer and send'; a finished answer is announced; hints are AA."""
        page = self.open_chat()
        hint = page.get_by_test_id("composer-hint")
        self.assertGreaterEqual(hint.evaluate(CONTRAST_JS), 4.5)
        self.send(page, "/lorem 400")
        self.wait_answer_length(page, 10)
        expect(page.get_by_test_id("send")).to_have_attribute("aria-label", "Stop the answer and send")
        expect(hint).to_contain_text("sending now stops it")
        self.shot(page, "streaming-send-label")
        page.get_by_test_id("stop").click()
        expect(self.last_answer(page)).to_have_attribute("data-status", "cancelled")
        expect(page.get_by_test_id("send")).to_have_attribute("aria-label", "Send message")
        self.answered(page, "announce me")
        expect(page.get_by_test_id("announcer")).to_contain_text("Answer: This is the offline local model")

"""The Content-Security-Policy in Chromium: enforced, and nothing the chat page or the admin needs is blocked."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.base import BrowserTestCase


class ContentSecurityPolicyTests(BrowserTestCase):
    def test_pages_work_under_the_policy_and_inline_script_is_blocked(self):
        """Chat (a Markdown answer, a tool card) and admin pages run with no CSP violation; an injected script does not."""
        page = self.new_page()
        response = page.goto("/accounts/login/?next=/")
        self.assertIn("script-src 'self'", response.headers["content-security-policy"])
        self.assertNotIn("unsafe-inline", response.headers["content-security-policy"])
        self.login(page)
        self.wait_ready(page)
        self.send(page, "what is 2+3*4")
        expect(self.last_answer(page)).to_have_attribute("data-status", "completed")
        expect(self.last_answer(page)).to_contain_text("14")

        # The policy is enforced: an inline script added to the page does not run, and Chromium says why.
        with page.expect_console_message(lambda message: "Content Security Policy" in message.text) as refusal:
            ran = page.evaluate(
                """() => { const s = document.createElement('script'); s.textContent = 'window.__inline = 1';
                           document.body.appendChild(s); return window.__inline === 1; }"""
            )
        self.assertFalse(ran)
        self.assertIn("inline script", refusal.value.text)
        self.csp_violations.clear()

        staff = self.new_page()
        thread_id = self.thread_id(page)
        for path in (
            "/admin/",
            "/admin/chat/thread/",
            f"/admin/chat/thread/{thread_id}/change/",
            "/admin/chat/message/",
            "/admin/chat/message/live/",
            "/admin/chat/tokenusage/report/",
        ):
            if path == "/admin/":
                self.login(staff, "root", path)
            else:
                staff.goto(path)
            expect(staff.locator("#content")).to_be_visible()
        self.assertEqual(self.csp_violations, [])

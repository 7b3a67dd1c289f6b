"""Login throttling (django-axes) and the Content-Security-Policy header of the pages."""

from __future__ import annotations

from django.test import Client, override_settings

from tests.base import PASSWORD, ChatTestCase


def login(client: Client, username: str, password: str, address: str = "127.0.0.1"):
    return client.post("/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=address)


@override_settings(AXES_FAILURE_LIMIT=3)
class LoginThrottleTests(ChatTestCase):
    def setUp(self) -> None:
        self.alice = self.make_user("alice")
        self.bob = self.make_user("bob")

    def test_wrong_passwords_lock_the_user_name_even_with_the_right_one(self) -> None:
        """After 3 wrong passwords for a name, the right one is refused (429) from any address."""
        statuses = [login(Client(), "alice", "wrong", f"10.0.0.{i}").status_code for i in range(3)]
        self.assertEqual(statuses, [200, 200, 429], "the third failure locks")
        client = Client()
        response = login(client, "alice", PASSWORD, "10.0.0.7")
        self.assertEqual(response.status_code, 429)
        self.assertNotIn("_auth_user_id", client.session)
        self.assertEqual(login(Client(), "bob", PASSWORD, "10.0.0.3").status_code, 302, "other names still log in")

    def test_wrong_passwords_from_one_address_lock_that_address(self) -> None:
        """3 failures from one address, each for a different name, lock the address for every name."""
        for name in ("x1", "x2", "x3"):
            login(Client(), name, "wrong", "10.0.0.9")
        self.assertEqual(login(Client(), "bob", PASSWORD, "10.0.0.9").status_code, 429)
        self.assertEqual(login(Client(), "bob", PASSWORD, "10.0.0.10").status_code, 302)

    def test_a_success_before_the_limit_resets_the_count(self) -> None:
        """Two failures then a success: the next failures start from zero again."""
        for _ in range(2):
            login(Client(), "alice", "wrong")
        self.assertEqual(login(Client(), "alice", PASSWORD).status_code, 302)
        for _ in range(2):
            login(Client(), "alice", "wrong")
        self.assertEqual(login(Client(), "alice", PASSWORD).status_code, 302)


class ContentSecurityPolicyTests(ChatTestCase):
    def test_chat_page_and_admin_pages_forbid_inline_scripts(self) -> None:
        """The chat page, the login page and the admin's pages send a CSP whose scripts come from the server only."""
        staff = self.make_user("root", is_staff=True, is_superuser=True)
        client = Client()
        client.force_login(staff)
        for path in ("/", "/accounts/login/", "/admin/", "/admin/chat/message/live/", "/admin/chat/tokenusage/report/"):
            with self.subTest(path=path):
                response = client.get(path)
                self.assertEqual(response.status_code, 200)
                policy = dict(
                    part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";") if part
                )
                self.assertEqual(policy["script-src"], "'self'")
                self.assertEqual(policy["object-src"], "'none'")
                self.assertEqual(policy["frame-ancestors"], "'none'")
                self.assertNotIn("unsafe-inline", response["Content-Security-Policy"])

"""The DaphneServer helper: a real daphne process on the test database."""

from tests.base import PASSWORD, ChatTransactionTestCase
from tests.live import DaphneServer, HttpSession


class DaphneServerTests(ChatTransactionTestCase):
    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.server = DaphneServer(name="live-server-test").start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()
        super().tearDownClass()

    def test_serves_the_login_page(self) -> None:
        """The server answers GET /accounts/login/ with the login form."""
        status, _ = HttpSession(self.server.base_url).get("/accounts/login/")
        self.assertEqual(status, 200)

    def test_login_uses_users_committed_by_the_test(self) -> None:
        """A user the test commits can log in: the server runs on the test database."""
        self.make_user("carol")
        session = HttpSession(self.server.base_url)
        cookie = session.login("carol", PASSWORD)
        self.assertIn("sessionid=", cookie)

    def test_wrong_password_gets_no_session(self) -> None:
        """A wrong password leaves the client without a session cookie."""
        self.make_user("dave")
        with self.assertRaises(AssertionError):
            HttpSession(self.server.base_url).login("dave", "wrong")

    def test_kill_and_restart_serve_again_on_the_same_port(self) -> None:
        """After SIGKILL, restart() brings the server back on the same port."""
        port = self.server.port
        self.server.kill()
        self.assertIsNotNone(self.server.process.poll())
        self.server.restart()
        self.assertEqual(self.server.port, port)
        status, _ = HttpSession(self.server.base_url).get("/accounts/login/")
        self.assertEqual(status, 200)

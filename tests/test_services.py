"""The service helpers tests and the runner rely on: throwaway Redis and PostgreSQL, skip or fail."""

import socket
import unittest
from unittest import mock

from django.test import SimpleTestCase

from tests import services


class MissingServiceTests(SimpleTestCase):
    def test_missing_service_skips_by_default(self) -> None:
        """Without REQUIRE_SERVICES a missing service is a skip."""
        with mock.patch.object(services, "REQUIRE_SERVICES", False):
            self.assertIsInstance(services.missing("Redis"), unittest.SkipTest)

    def test_missing_service_fails_when_required(self) -> None:
        """With REQUIRE_SERVICES=1 a missing service is an error naming it."""
        with mock.patch.object(services, "REQUIRE_SERVICES", True):
            error = services.missing("Redis")
        self.assertIsInstance(error, RuntimeError)
        self.assertIn("Redis", str(error))


class ThrowawayServerTests(SimpleTestCase):
    def test_redis_answers_ping_until_stopped(self) -> None:
        """start_redis returns a URL whose server answers PING; stop() ends it."""
        url, stop = services.start_redis()
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"PING\r\n")
                self.assertTrue(sock.recv(16).startswith(b"+PONG"))
        finally:
            stop()
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()

    def test_postgres_accepts_connections_until_stopped(self) -> None:
        """start_postgres returns a URL of a database that accepts connections; stop() ends the cluster."""
        import psycopg

        url, stop = services.start_postgres()
        conninfo = url.replace("postgres://", "postgresql://", 1)
        try:
            with psycopg.connect(conninfo) as conn:
                self.assertEqual(conn.execute("SELECT current_database()").fetchone()[0], "chat")
        finally:
            stop()
        with self.assertRaises(psycopg.OperationalError):
            psycopg.connect(conninfo, connect_timeout=5).close()

    def test_chromium_is_an_executable_path(self) -> None:
        """chromium_path names the browser binary the browser tests launch."""
        self.assertRegex(services.chromium_path(), r"/[^/]*chrom[^/]*$")

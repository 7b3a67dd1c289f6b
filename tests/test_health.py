"""`GET /healthz`: 200 while the database and the channel layer answer, 503 while Redis is down."""

from __future__ import annotations

import urllib.error
import urllib.request

from django.test import SimpleTestCase

from tests.base import ChatTransactionTestCase
from tests.live import DaphneServer
from tests.services import start_redis, wait_until
from tests.test_redis_faults import redis_port


def get_health(base_url: str) -> tuple[int, dict]:
    import json

    try:
        with urllib.request.urlopen(f"{base_url}/healthz", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


class HealthTests(ChatTransactionTestCase):
    async def test_healthy_server_answers_200_without_login(self) -> None:
        """With the database and the in-memory layer up, /healthz answers 200 ok to anyone."""
        response = await self.async_client.get("/healthz")
        self.assertEqual(
            (response.status_code, response.json()), (200, {"status": "ok", "database": "ok", "channel_layer": "ok"})
        )


class RedisDownHealthTests(SimpleTestCase):
    databases = {"default"}

    def test_503_while_redis_is_stopped_and_200_once_it_is_back(self) -> None:
        """A daphne process on Redis: /healthz is 200, 503 naming the channel layer while Redis is down, 200 after."""
        url, stop = start_redis()
        server = DaphneServer({"REDIS_URL": url}, name="healthz").start()
        try:
            self.assertEqual(get_health(server.base_url)[0], 200)
            stop()
            status, body = get_health(server.base_url)
            self.assertEqual((status, body["status"], body["database"]), (503, "unavailable", "ok"))
            self.assertNotEqual(body["channel_layer"], "ok")
            _, stop = start_redis(redis_port(url))
            wait_until(lambda: get_health(server.base_url)[0] == 200, 20, "/healthz to answer 200 again", 0.2)
        finally:
            server.stop()
            stop()

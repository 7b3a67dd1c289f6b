"""`GET /healthz` of a daphne process on Redis: 503 while Redis is stopped, 200 once it is back."""

from __future__ import annotations

from django.test import SimpleTestCase, tag

from tests.cluster.test_redis_faults import redis_port
from tests.live import DaphneServer
from tests.services import start_redis, wait_until
from tests.test_health import get_health


@tag("cluster")
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

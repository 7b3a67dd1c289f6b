"""`GET /healthz`: 200 while the database and the channel layer answer (the Redis case: tests/cluster)."""

from __future__ import annotations

import urllib.error
import urllib.request

from tests.base import ChatTransactionTestCase


def get_health(base_url: str) -> tuple[int, dict]:
    import json

    try:
        with urllib.request.urlopen(f"{base_url}/healthz", timeout=10) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:  # not our answer (a proxy's error page)
        return status, {}


class HealthTests(ChatTransactionTestCase):
    async def test_healthy_server_answers_200_without_login(self) -> None:
        """With the database and the in-memory layer up, /healthz answers 200 ok to anyone."""
        response = await self.async_client.get("/healthz")
        self.assertEqual(
            (response.status_code, response.json()), (200, {"status": "ok", "database": "ok", "channel_layer": "ok"})
        )

"""`scripts/cluster` as a user runs it: one turn through nginx, `/healthz` 503 while Redis is stopped, a clean stop."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from django.conf import settings
from django.test import SimpleTestCase, tag

from tests.live import HttpSession
from tests.services import ServiceExited, free_port, missing, wait_until
from tests.test_e2e import completed, recv, recv_until
from tests.test_health import get_health

READY = "cluster ready: "


@tag("cluster")
class ClusterScriptTests(SimpleTestCase):
    def start_cluster(self) -> tuple[subprocess.Popen, Path, str]:
        for binary in ("nginx", "redis-server"):
            if shutil.which(binary) is None:
                raise missing(binary)
        folder = Path(tempfile.mkdtemp(prefix="chat-cluster-"))
        folder.chmod(0o755)  # the postgres user must reach its data folder inside
        self.addCleanup(shutil.rmtree, folder, True)
        port = free_port()
        env = {**os.environ, "CLUSTER_DIR": str(folder / "data"), "PORT": str(port), "WEB": "2", "WORKERS": "1"}
        env.update({"LOCAL_MODEL_DELAY_MS": "10", "FAST_PASSWORD_HASHING": "1", "DEMO_PASSWORD": "demo-password"})
        out = open(folder / "cluster.out", "wb")
        self.addCleanup(out.close)
        process = subprocess.Popen(
            [str(Path(settings.BASE_DIR) / "scripts" / "cluster")],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        self.addCleanup(self.stop, process, 5)

        def ready() -> bool:
            if process.poll() is not None:
                raise ServiceExited(f"scripts/cluster exited:\n{(folder / 'cluster.out').read_text()}")
            return READY in (folder / "cluster.out").read_text()

        wait_until(ready, 180, f"scripts/cluster ({folder / 'cluster.out'})")
        return process, folder / "data", f"http://127.0.0.1:{port}"

    def stop(self, process: subprocess.Popen, timeout: float) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def test_one_turn_through_nginx_and_healthz_503_while_redis_is_down(self) -> None:
        """The cluster serves a turn through nginx; /healthz says 503 with Redis stopped; SIGTERM ends every process."""
        process, data, url = self.start_cluster()
        frames = asyncio.run(self.one_turn(url))
        self.assertEqual(frames[-1]["data"]["status"], "completed")
        self.assertEqual(get_health(url)[0], 200)
        pids = {path.stem: int(path.read_text()) for path in data.glob("*.pid") if path.stem != "nginx"}
        os.kill(pids["redis"], signal.SIGTERM)
        wait_until(lambda: get_health(url)[0] == 503, 20, "/healthz to answer 503")
        status, body = get_health(url)
        self.assertEqual((status, body["database"]), (503, "ok"))
        self.stop(process, 60)
        self.assertEqual(process.returncode, 0)
        alive = [name for name, pid in pids.items() if self.alive(pid)]
        self.assertEqual(alive, [])
        self.assertFalse((data / "pg" / "postmaster.pid").exists())

    @staticmethod
    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    async def one_turn(self, url: str) -> list[dict]:
        import websockets

        http = HttpSession(url)
        await asyncio.to_thread(http.login, "demo", "demo-password")
        status, thread = await asyncio.to_thread(http.post, "/api/threads/", {"title": "smoke"})
        self.assertEqual(status, 201)
        headers = {"Cookie": http.cookie_header, "Origin": url}
        async with websockets.connect(
            f"{url.replace('http', 'ws')}/ws/threads/{thread['id']}/", additional_headers=headers
        ) as ws:
            await recv(ws)
            await ws.send(json.dumps({"type": "user_message", "content": "what is 6*7", "turn_id": "smoke-1"}))
            return await recv_until(ws, completed("smoke-1"))

"""Run the whole cluster on this machine: PostgreSQL, Redis, N web processes, M agent workers, nginx.

Started by `scripts/cluster` (which prepares the virtualenv). Everything
listens on 127.0.0.1; data (the PostgreSQL cluster, logs, pids) lives in
CLUSTER_DIR (default `.cluster/` in the project) and survives a restart.
It prints `cluster ready: URL` once nginx answers `/healthz`, then waits;
SIGINT or SIGTERM stops everything in order (nginx, web processes and
workers gracefully, Redis, PostgreSQL).

Environment: WEB (2), WORKERS (1), PORT (8080, nginx), CLUSTER_DIR,
DEMO_USERNAME / DEMO_PASSWORD (demo, and a random password kept in
`.demo-password`), and any setting of
the README (passed on to the web processes and workers).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def log(message: str) -> None:
    print(f"[cluster] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


def accepts(port: int) -> bool:
    socket.create_connection(("127.0.0.1", port), timeout=1).close()
    return True


class Cluster:
    def __init__(self) -> None:
        self.dir = Path(os.environ.get("CLUSTER_DIR", ROOT / ".cluster")).resolve()
        self.web_count = int(os.environ.get("WEB", "2"))
        self.worker_count = int(os.environ.get("WORKERS", "1"))
        self.port = int(os.environ.get("PORT", "8080"))
        self.processes: list[tuple[str, subprocess.Popen]] = []
        self.as_postgres: list[str] = []
        self.pg_bin = self.postgres_bin()
        self.pg_data = self.dir / "pg"
        self.pg_port = free_port()
        self.redis_port = free_port()

    # --- PostgreSQL -------------------------------------------------------

    @staticmethod
    def postgres_bin() -> Path:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
        if found:
            return found[-1].parent
        initdb = shutil.which("initdb")
        if initdb is None:
            raise SystemExit("PostgreSQL is not installed (apt-get install postgresql)")
        return Path(initdb).parent

    def pg(self, *args: str) -> None:
        subprocess.run([*self.as_postgres, *args], check=True, capture_output=True)

    def start_postgres(self) -> str:
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            import pwd

            owner = pwd.getpwnam("postgres")
            self.as_postgres = ["runuser", "-u", "postgres", "--"]
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
        if not (self.pg_data / "PG_VERSION").exists():
            log("initdb")
            self.pg(str(self.pg_bin / "initdb"), "-D", str(self.pg_data), "-U", "postgres", "-A", "trust", "-E", "UTF8")
        options = f"-p {self.pg_port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        self.pg(str(self.pg_bin / "pg_ctl"), "-D", str(self.pg_data), "-l", str(self.dir / "postgres.log"),
                "-o", options, "-w", "start")  # fmt: skip
        log(f"PostgreSQL on 127.0.0.1:{self.pg_port}")
        import psycopg

        admin = f"host=127.0.0.1 port={self.pg_port} user=postgres dbname=postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'chat'").fetchone():
                conn.execute("CREATE DATABASE chat")
        return f"postgres://postgres@127.0.0.1:{self.pg_port}/chat"

    def stop_postgres(self) -> None:
        if (self.pg_data / "postmaster.pid").exists():
            subprocess.run([*self.as_postgres, str(self.pg_bin / "pg_ctl"), "-D", str(self.pg_data), "-m", "fast",
                            "-w", "stop"], capture_output=True)  # fmt: skip

    # --- processes ----------------------------------------------------------

    def spawn(self, name: str, command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        with open(self.dir / f"{name}.log", "ab") as out:
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        (self.dir / f"{name}.pid").write_text(str(process.pid))
        self.processes.append((name, process))
        return process

    def nginx_config(self, web_ports: list[int]) -> Path:
        (self.dir / "nginx-tmp").mkdir(exist_ok=True)
        template = (ROOT / "deploy" / "nginx.conf.template").read_text()
        upstreams = "\n".join(f"        server 127.0.0.1:{port};" for port in web_ports)
        user = "user root;" if os.geteuid() == 0 else ""
        config = (
            template.replace("@DIR@", str(self.dir))
            .replace("@PORT@", str(self.port))
            .replace("@UPSTREAMS@", upstreams)
            .replace("@USER@", user)
        )
        path = self.dir / "nginx.conf"
        path.write_text(config)
        return path

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        database_url = self.start_postgres()
        redis = shutil.which("redis-server") or "redis-server"
        self.spawn("redis", [redis, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"])  # fmt: skip
        wait_for(lambda: accepts(self.redis_port), 20, "Redis")
        log(f"Redis on 127.0.0.1:{self.redis_port}")
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "chatproject.settings",
            "DATABASE_URL": database_url,
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "AGENT_WORKERS": "1" if self.worker_count else "0",
            "PYTHONUNBUFFERED": "1",
        }
        manage = [PYTHON, "manage.py"]
        subprocess.run([*manage, "migrate", "--no-input"], cwd=ROOT, env=env, check=True, capture_output=True)
        username = os.environ.get("DEMO_USERNAME", "demo")
        password = os.environ.get("DEMO_PASSWORD", "")  # empty: a random one, kept in .demo-password
        made = subprocess.run([*manage, "ensure_demo_user", "--username", username, "--password", password],
                              cwd=ROOT, env=env, check=True, capture_output=True, text=True)  # fmt: skip
        login = next((line for line in made.stdout.splitlines() if line.startswith("Log in as:")), "")
        web_ports = [free_port() for _ in range(self.web_count)]
        daphne = str(Path(PYTHON).parent / "daphne")
        for index, port in enumerate(web_ports):
            self.spawn(f"web-{index + 1}", [daphne, "-b", "127.0.0.1", "-p", str(port),
                                            "chatproject.asgi:application"], env)  # fmt: skip
        for index in range(self.worker_count):
            self.spawn(f"worker-{index + 1}", [*manage, "run_agent_worker"], env)
        for port in web_ports:
            wait_for(lambda port=port: accepts(port), 60, f"the web process on port {port}")
        log(f"{self.web_count} web process(es) on {', '.join(map(str, web_ports))}; {self.worker_count} worker(s)")
        self.spawn("nginx", ["nginx", "-c", str(self.nginx_config(web_ports)), "-p", str(self.dir)])
        url = f"http://127.0.0.1:{self.port}"
        wait_for(lambda: urllib.request.urlopen(f"{url}/healthz", timeout=2).status == 200, 60, "nginx /healthz")
        log(f"{login.removeprefix('Log in as:').strip()} (demo login); logs and pids in {self.dir}")
        log(f"cluster ready: {url}/")

    def stop(self) -> None:
        """nginx first (no new requests), then web processes and workers (they drain), then Redis, PostgreSQL."""
        order = ["nginx", "web", "worker", "redis"]
        for prefix in order:
            group = [(n, p) for n, p in self.processes if n.startswith(prefix) and p.poll() is None]
            for _, process in group:
                process.send_signal(signal.SIGQUIT if prefix == "nginx" else signal.SIGTERM)
            for name, process in group:
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    log(f"{name} did not stop; killing it")
                    process.kill()
                    process.wait()
        self.stop_postgres()
        log("stopped")


def main() -> int:
    cluster = Cluster()
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        cluster.start()
        while not stopping:
            for name, process in cluster.processes:
                if process.poll() is not None and name.startswith(("web", "worker", "nginx")):
                    log(f"{name} exited with {process.returncode} (see {cluster.dir / (name + '.log')})")
                    cluster.processes.remove((name, process))
                    break
            time.sleep(0.2)
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

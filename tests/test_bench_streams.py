"""bench/streams.py in its smoke mode: every target streams exactly, and the bench leaves no process behind.

Timings are not judged here (speed is measured in bench/, never asserted in
tests). It runs in the cluster leg of scripts/test, where PostgreSQL and
Redis are required (REQUIRE_SERVICES=1 turns their absence into a failure).
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from unittest.mock import patch

from django.test import SimpleTestCase, tag

from tests.services import missing, postgres_bin

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import direct_app  # noqa: E402
from stream_figures import disk_note, peer_text, step_row, summary  # noqa: E402

STARTED = re.compile(r"^started .*all on 127\.0\.0\.1; pids \[([\d, ]+)\]$", re.MULTILINE)


class Bench:
    """`bench/streams.py ARGS` (or another `script`) as a child process whose stdout lines are read as they come."""

    def __init__(self, *args: str, sigint_ignored: bool = False, script: str = "bench/streams.py") -> None:
        self.process = subprocess.Popen(
            [sys.executable, script, *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # As a shell's background job starts it: SIGINT inherited ignored.
            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put("")

    def next_line(self, timeout: float) -> str:
        line = self.lines.get(timeout=timeout)
        self.output.append(line)
        return line

    def wait_for(self, pattern: re.Pattern, timeout: float) -> re.Match:
        """The first output line matching `pattern`; AssertionError if the bench ends or `timeout` passes first."""
        while line := self.next_line(timeout):
            if found := pattern.search(line.rstrip("\n")):
                return found
        raise AssertionError("the bench ended without printing it:\n" + self.text)

    def finish(self, timeout: float) -> int:
        """Its exit status, after reading all output; on timeout SIGTERM (it cleans up), then SIGKILL."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        while self.next_line(10):
            pass
        return self.process.returncode

    @property
    def text(self) -> str:
        return "".join(self.output)


def row(text: str, target: str, k: int) -> list[str]:
    """The cells of the final table's row for (target, K)."""
    found = re.findall(rf"^\| {target} \| {k} \| .*\|$", text, re.MULTILINE)
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in found]
    rows = [cells for cells in rows if len(cells) == 12]
    assert rows, f"no row for {target} at K={k}"
    return rows[-1]


def alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if os.path.exists(f"/proc/{pid}") and not _zombie(pid)]


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@tag("cluster")
class StreamsBenchTests(SimpleTestCase):
    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        if postgres_bin() is None:
            raise missing("PostgreSQL (initdb)")
        if shutil.which("redis-server") is None:
            raise missing("Redis (redis-server)")

    def test_smoke_run_streams_every_target_exactly_and_stops_everything(self) -> None:
        """The smoke run streams all five targets at K=1 and 2, loses nothing, and no process of it outlives it."""
        bench = Bench("--smoke")
        pids = [int(p) for p in bench.wait_for(STARTED, 120).group(1).split(",")]
        code = bench.finish(150)
        self.assertEqual(code, 0, bench.text[-4000:])
        self.assertIn("| nothing lost or duplicated | yes | 0 streams differ |", bench.text)
        for target in ("bare", "direct", "frames", "embedded", "cluster"):
            self.assertEqual(row(bench.text, target, 2)[2], "yes")
        # Users are made before any step (making them during the ladder cost the next step's database).
        self.assertIn("embedded: 25 users made and the database quiet before any step", bench.text)
        self.assertIn("cluster: 5 users made and the database quiet before any step", bench.text)
        # Each first-delta goal shows the floor beside it: the frames peer's gap at the same K.
        self.assertRegex(
            bench.text,
            r"\| embedded: first delta p99 - bare's <= 20 ms at K=1 \| .* \| -?\d+ ms \(the frames peer: -?\d+ ms\) \|",
        )
        commits = row(bench.text, "cluster", 2)[8]  # from the writers' logs, else from PostgreSQL
        self.assertRegex(commits, r"^[\d,]+\.\d( \(pg( [\d,]+\.\d)?\))?$")
        # The cluster's CPU by role: every one of its processes counted, summing to the row's server CPU.
        header = "| target | K | web | worker | postgres | redis | total | of it, opening the sockets |"
        self.assertIn(header, bench.text)
        by_role = next(
            line for line in bench.text.splitlines() if line.startswith("| cluster | 2 | ") and line.count("|") == 9
        )
        cells = [float(c) for c in by_role.strip("| ").split(" | ")[2:]]
        self.assertTrue(all(c >= 0 for c in cells) and cells[0] > 0 and cells[1] > 0, by_role)
        self.assertAlmostEqual(sum(cells[:4]), cells[4], delta=0.02)
        self.assertLess(cells[5], cells[4])
        # Each step's disk, probed: a step whose streams all stalled while no process ran had waited for it.
        self.assertRegex(
            bench.text, r"\| a sane disk: the probe's fdatasync under 200 ms in every step \| .* \| longest \d+ ms"
        )
        self.assertEqual(alive(pids), [])

    def test_an_interrupted_run_stops_every_process_it_started(self) -> None:
        """SIGINT mid-run: the bench stops PostgreSQL, Redis, both web processes and the worker before it exits."""
        bench = Bench("--smoke", "--targets", "cluster", "--ks", "1,2,3,4", sigint_ignored=True)
        pids = [int(p) for p in bench.wait_for(STARTED, 120).group(1).split(",")]
        self.assertEqual(len(pids), 5)  # postmaster, Redis, 2 daphnes, the worker
        for _ in range(3):  # once is enough when it lands; a signal the run never saw is sent again
            bench.process.send_signal(signal.SIGINT)
            try:
                bench.process.wait(5)
                break
            except subprocess.TimeoutExpired:
                continue
        self.assertEqual(bench.finish(90), 130, bench.text[-4000:])
        self.assertEqual(alive(pids), [])


@tag("cluster")
class StreamPhasesTests(SimpleTestCase):
    def test_each_phase_of_a_cluster_stream_reports_its_cpu_by_role_and_nothing_outlives_it(self) -> None:
        """bench/stream_phases.py: open, a one-word turn, idle, a streaming turn and close, each with its CPU."""
        if postgres_bin() is None or shutil.which("redis-server") is None:
            raise missing("PostgreSQL and Redis")
        args = ("--target", "cluster", "-k", "2", "--rounds", "1", "--words", "5", "--idle", "0.2")
        bench = Bench(*args, script="bench/stream_phases.py")
        started = bench.wait_for(re.compile(r"^started cluster; pids \[([\d, ]+)\]$"), 120)
        pids = [int(p) for p in started.group(1).split(",")]
        code = bench.finish(120)
        self.assertEqual(code, 0, bench.text[-4000:])
        phase = r"^{} +[\d.]+ s  CPU ms per socket: +[\d.]+ \(postgres [\d.]+ redis [\d.]+ web [\d.]+ worker [\d.]+\)"
        for name in ("open", "idle 0.2 s", "close"):
            self.assertRegex(bench.text, re.compile(phase.format(re.escape(name)) + "$", re.MULTILINE))
        for name in ("turn /lorem 1", "turn /lorem 5"):
            first = r"  first delta p50 [\d.]+ max [\d.]+ ms$"
            self.assertRegex(bench.text, re.compile(phase.format(re.escape(name)) + first, re.MULTILINE))
        self.assertEqual(alive(pids), [])


@tag("cluster")
class FramesPeerTests(SimpleTestCase):
    async def test_the_frames_peer_sends_the_contracts_three_frames_before_its_first_delta(self) -> None:
        """bench's floor: user_message, agent_started, agent_thinking, then the deltas; the direct peer: deltas only."""
        from channels.testing import WebsocketCommunicator

        for head, expected in (
            (direct_app.CONTRACT_HEAD, ["user_message", "agent_started", "agent_thinking"]),
            ([], []),
        ):
            with (
                patch.object(direct_app, "HEAD", head),
                patch.object(direct_app, "WORDS", 2),
                patch.object(direct_app, "DELAY", 0),
            ):
                client = WebsocketCommunicator(direct_app.application, "/")
                connected, _ = await client.connect()
                self.assertTrue(connected)
                await client.send_to(text_data='{"type": "user_message", "content": "/lorem 2"}')
                types = []
                while not types or types[-1] != "agent_completed":
                    types.append(json.loads(await client.receive_from(5))["type"])
                await client.disconnect()
            self.assertEqual(types, expected + ["message_delta", "message_delta", "agent_completed"])


def stream(words: int, thread_id: int | None = 1, stall_ms: float = 0, emitted: bool = True) -> dict:
    """A client's result: one delta per word every 20 ms, produced 5 ms before it arrived; word 100 on stalls."""
    text, deltas = "", []
    for i, word in enumerate(peer_text(words).split(" ")[:-1]):
        arrived = 1000 + 20 * i + (stall_ms if i >= 100 else 0)
        deltas.append([arrived, len(text), len(text) + len(word) + 1, arrived - 5 if emitted else None])
        text += word + " "
    return {"thread_id": thread_id, "deltas": deltas, "error": None, "text": text, "sent": 990}


def row_of(result: dict, stored: str | None = None) -> dict:
    stored_rows = {1: (result["text"] if stored is None else stored, "completed")}
    return step_row("embedded", 1, 200, [result], stored_rows, 1.0, 2**20, {"writer": 10, "pg": None})


@tag("cluster")
class IdleWaitTests(SimpleTestCase):
    """Each step starts once every target's processes are idle (stream_servers.wait_until_idle)."""

    def spawn(self, code: str) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
        self.addCleanup(process.wait, 10)
        self.addCleanup(os.killpg, process.pid, signal.SIGKILL)
        return process

    def test_an_idle_server_lets_the_step_start_and_a_busy_one_holds_it(self) -> None:
        """An idle process passes within a few windows; a spinning one holds the wait until its timeout."""
        from stream_servers import wait_until_idle

        idle = self.spawn("import time; time.sleep(60)")
        busy = self.spawn("while True: pass")
        waited = wait_until_idle({idle.pid: "web"}, {}, window=0.2, timeout=5)
        self.assertIsNotNone(waited)
        self.assertIsNone(wait_until_idle({idle.pid: "web", busy.pid: "web"}, {}, window=0.2, timeout=1))

    def test_a_service_busy_in_a_child_process_holds_the_step(self) -> None:
        """A service counts with its children (PostgreSQL's autovacuum runs in one)."""
        from stream_servers import wait_until_idle

        service = self.spawn("import subprocess, sys; subprocess.run([sys.executable, '-c', 'while True: pass'])")
        self.assertIsNone(wait_until_idle({}, {service.pid: "postgres"}, window=0.2, timeout=1))


@tag("cluster")
class StepFigureTests(SimpleTestCase):
    def test_a_step_during_which_the_disk_stalled_is_named(self) -> None:
        rows = [row_of(stream(200)) | {"disk_ms": 3.0}, row_of(stream(200)) | {"k": 4, "disk_ms": 503.0}]
        self.assertIn(
            "| a sane disk: the probe's fdatasync under 200 ms in every step | **no** "
            "| longest 503 ms; embedded K=4 503 ms |",
            summary(rows, ["embedded"], None),
        )
        self.assertEqual(disk_note(rows[0]), "")
        self.assertEqual(disk_note(rows[1]), "(the disk stalled: an fdatasync of the probe took 503 ms)")

    def test_a_stream_on_schedule_passes_with_its_figures(self) -> None:
        """200 words on time: latency 5 ms, lateness 0, 50 writer commits per 1,000 words, the step passes."""
        row = row_of(stream(200))
        self.assertEqual((row["p99_ms"], row["late_p99_ms"], row["commits_per_1k"]), (5, 0, 50.0))
        self.assertTrue(row["passed"])

    def test_one_character_lost_fails_the_step_as_lost(self) -> None:
        """A stored answer one character longer than the rebuilt text counts as a lost stream (it fails the run)."""
        result = stream(200)
        row = row_of(result, stored=result["text"] + "x")
        self.assertEqual(row["lost"], 1)
        self.assertFalse(row["passed"])

    def test_a_delta_without_emitted_at_fails_the_step(self) -> None:
        """Deltas that lack emitted_at make the latency unknown: the step fails."""
        row = row_of(stream(200, emitted=False))
        self.assertFalse(row["passed"])
        self.assertIn("without emitted_at", row["errors"][0])

    def test_a_stall_of_250_ms_fails_on_windowed_lateness(self) -> None:
        """A 250 ms stall mid-stream shows as p99 windowed lateness of 250 ms and fails the step."""
        row = row_of(stream(200, stall_ms=250))
        self.assertEqual(row["late_p99_ms"], 250)
        self.assertFalse(row["passed"])

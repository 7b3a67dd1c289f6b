"""A real OpenAI-compatible chat-completions server on 127.0.0.1 that follows a script.

Each request takes the next reply of the script: a `Stream` of chunks sent as
`text/event-stream` (chunked transfer encoding, `data: {...}` events, then
`data: [DONE]`), or a `Status` error. The server records every request and
whether a client hung up on a stream, so tests can check what the provider
sent and that cancelling closed the connection.

`chat_chunks` builds chunks shaped like the ones real servers send:
OpenAI (role chunk, content deltas, tool-call fragments by index, a
`finish_reason` chunk, a final usage chunk with empty `choices`), reasoning
in `reasoning_content` (DeepSeek, vLLM, llama.cpp's `llama-server`) or in
`reasoning` (Ollama, OpenRouter), whole tool calls in one chunk (Ollama) and
usage on the finishing chunk (llama.cpp).
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
import unittest
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Stream:
    """A 200 event stream: `chunks` as `data:` events, then `[DONE]` when `done`.

    `delay` is slept before each chunk. After `drop_after` chunks the server
    cuts the connection without ending the body (a crash); after
    `stall_after` chunks it goes silent until the client hangs up; after
    `hold_after` chunks it waits until the test sets `release`, then sends
    the rest.
    """

    chunks: list[dict]
    delay: float = 0.0
    drop_after: int | None = None
    stall_after: int | None = None
    hold_after: int | None = None
    release: threading.Event = field(default_factory=threading.Event)
    done: bool = True


@dataclass
class Status:
    """An HTTP error reply with an OpenAI-style `{"error": {...}}` body."""

    status: int
    message: str = "The server had an error while processing your request."
    error_type: str = "server_error"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    body: dict
    received_at: float = 0.0  # time.monotonic() when the request was read


class FakeOpenAI:
    """The scripted server; use as a context manager or call start() and stop()."""

    def __init__(self, script: Sequence[Stream | Status] = ()):
        self.script: list[Stream | Status] = list(script)
        self.requests: list[ReceivedRequest] = []
        self.disconnected = threading.Event()  # a client hung up on a stream
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """The base URL to give the SDK (it appends `/chat/completions`)."""
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> FakeOpenAI:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def wait_disconnected(self, timeout: float = 5.0) -> bool:
        """Block until a client hung up on a stream; False when `timeout` passed first."""
        return self.disconnected.wait(timeout)

    def _next_reply(self, request: ReceivedRequest) -> Stream | Status:
        with self._lock:
            self.requests.append(request)
            if self.script:
                return self.script.pop(0)
        return Status(500, "the fake server's script has no reply left for this request")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeOpenAI

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {"_invalid_json": raw.decode("utf-8", "replace")}
        request = ReceivedRequest(self.path, dict(self.headers.items()), body, time.monotonic())
        reply = self.fake._next_reply(request)
        if isinstance(reply, Status):
            self._send_status(reply)
        else:
            self._send_stream(reply)

    def _send_status(self, reply: Status) -> None:
        payload = json.dumps(
            {"error": {"message": reply.message, "type": reply.error_type, "param": None, "code": None}}
        ).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _send_stream(self, reply: Stream) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for sent in range(len(reply.chunks) + 1):
            if sent == reply.drop_after:
                return self._drop()
            if sent == reply.stall_after:
                return self._stall()
            if sent == reply.hold_after and not self._hold(reply.release):
                return
            if sent == len(reply.chunks):
                break
            if reply.delay:
                time.sleep(reply.delay)
            if not self._write_event(json.dumps(reply.chunks[sent])):
                return self.fake.disconnected.set()
        if reply.done and not self._write_event("[DONE]"):
            return self.fake.disconnected.set()
        self._write_raw(b"0\r\n\r\n")

    def _write_event(self, data: str) -> bool:
        event = f"data: {data}\n\n".encode()
        return self._write_raw(b"%x\r\n%s\r\n" % (len(event), event))

    def _write_raw(self, data: bytes) -> bool:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            self.close_connection = True
            return False
        return True

    def _drop(self) -> None:
        """Cut the connection in the middle of the body, as a crashed server or proxy does."""
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def _hold(self, release: threading.Event) -> bool:
        """Wait for the test to release the rest of the stream; False when the server stops first."""
        while not release.wait(0.05):
            if self.fake._stopping.is_set():
                self.close_connection = True
                return False
        return True

    def _stall(self) -> None:
        """Send nothing more; record when the client closes its end."""
        self.close_connection = True
        while not self.fake._stopping.is_set():
            readable, _, _ = select.select([self.connection], [], [], 0.05)
            if not readable:
                continue
            try:
                data = self.connection.recv(1, socket.MSG_PEEK)
            except OSError:
                data = b""
            if not data:
                self.fake.disconnected.set()
            return


@contextmanager
def hanging_connect_port(max_fillers: int = 16) -> Iterator[int]:
    """A port on 127.0.0.1 where a new connect never completes: a listener that accepts nothing, its queue full.

    Linux drops a SYN to a listener whose accept queue is full, so the
    client's connect waits in SYN_SENT (retransmitting) until its own
    timeout. Connections are added until a probe connect does not complete;
    where the system completes them anyway the test is skipped, not flaky.
    """
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        while True:
            probe = socket.socket()
            probe.setblocking(False)
            probe.connect_ex(("127.0.0.1", port))
            # A loopback handshake completes within the connect call itself; 0.5 s is only a margin.
            _, writable, _ = select.select([], [probe], [], 0.5)
            if not writable:
                probe.close()
                break
            fillers.append(probe)
            if len(fillers) > max_fillers:
                raise unittest.SkipTest("this system completes connects to a listener with a full accept queue")
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def tool_call(call_id: str, name: str, *argument_fragments: str) -> dict:
    """A tool call to stream: its id, its name and its JSON arguments cut into fragments."""
    return {"id": call_id, "name": name, "fragments": list(argument_fragments)}


def chat_chunks(
    content: Sequence[str] = (),
    *,
    reasoning: Sequence[str] = (),
    reasoning_field: str = "reasoning_content",
    tool_calls: Sequence[dict] = (),
    whole_tool_calls: bool = False,
    usage: tuple[int, int] | None = None,
    usage_on_finish_chunk: bool = False,
    finish_reason: str | None = None,
    model: str = "gpt-4o-mini-2024-07-18",
) -> list[dict]:
    """The chunks of one streamed completion, in the order real servers send them.

    `reasoning_field` is `reasoning_content` (DeepSeek, vLLM, llama.cpp) or
    `reasoning` (Ollama, OpenRouter); reasoning deltas carry `content: null`
    as DeepSeek's do. Tool calls stream OpenAI's way (a first fragment with
    index, id, type and name, then argument fragments) or, with
    `whole_tool_calls`, complete in one chunk as Ollama sends them. `usage`
    (prompt, completion) comes in a last chunk with empty `choices`
    (OpenAI, vLLM, Ollama) or, with `usage_on_finish_chunk`, on the
    finishing chunk (llama.cpp). `finish_reason` defaults to `tool_calls`
    when there are tool calls, else `stop`; pass "" to leave it out.
    """
    created = int(time.time())

    def chunk(delta: dict | None, finish: str | None = None) -> dict:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": choices,
            "usage": None,
        }

    chunks = [chunk({"role": "assistant", "content": "", "refusal": None})]
    chunks += [chunk({"content": None, reasoning_field: piece}) for piece in reasoning]
    chunks += [chunk({"content": piece}) for piece in content]
    for index, call in enumerate(tool_calls):
        head = {"index": index, "id": call["id"], "type": "function", "function": {"name": call["name"]}}
        if whole_tool_calls:
            head["function"]["arguments"] = "".join(call["fragments"])
            chunks.append(chunk({"tool_calls": [head]}))
            continue
        head["function"]["arguments"] = ""
        chunks.append(chunk({"tool_calls": [head]}))
        chunks += [
            chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}) for piece in call["fragments"]
        ]
    if finish_reason is None:
        finish_reason = "tool_calls" if tool_calls else "stop"
    usage_body = None
    if usage is not None:
        usage_body = {
            "prompt_tokens": usage[0],
            "completion_tokens": usage[1],
            "total_tokens": usage[0] + usage[1],
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        }
    if finish_reason:
        chunks.append(chunk({}, finish_reason))
        if usage_body and usage_on_finish_chunk:
            chunks[-1]["usage"] = usage_body
    if usage_body and not usage_on_finish_chunk:
        chunks.append(chunk(None) | {"usage": usage_body})
    return chunks

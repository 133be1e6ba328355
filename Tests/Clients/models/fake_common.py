"""What the fake upstreams (fake_openai.py, fake_anthropic.py, fake_bedrock.py)
share: the request log behind GET /_fake/requests, the HTTP/1.1 handler's
plumbing (JSON responses, chunked bodies, server-sent events, a connection
cut mid-body) and the server's start (the port on stdout's first line).

Standard library only. The fakes import it from their own directory (they
put it on sys.path), so they run by path from any working directory.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class RequestLog:
    """What a fake was sent, one entry per request, for GET /_fake/requests."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests: list[dict] = []

    def record(self, entry: dict) -> None:
        with self.lock:
            self.requests.append(entry)

    def snapshot(self) -> list[dict]:
        with self.lock:
            return list(self.requests)


def count_message_tokens(messages) -> int:
    """A rough token count of chat messages whose content is a string or a
    list of text parts (OpenAI's and Anthropic's shapes)."""
    total = 0
    for m in messages or []:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            total += len(content.split()) + 4
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    total += len(part["text"].split())
            total += 4
    return total


def json_object(raw: bytes) -> dict | None:
    """The request body as a JSON object, or None when it is not one."""
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


class FakeHandler(BaseHTTPRequestHandler):
    """A fake's handler: HTTP/1.1 (keep-alive, chunked bodies), logging to
    stderr, and the writes every fake makes."""

    protocol_version = "HTTP/1.1"
    # TCP_NODELAY, as real services send: without it a stream's first small
    # write waits for the client's delayed ACK of the head (~40 ms).
    disable_nagle_algorithm = True
    sys_version = ""
    log_name = "fake"  # the prefix of this fake's stderr lines
    state: RequestLog  # set on the class by serve()

    def log_message(self, format, *args):  # keep stdout for the port line
        sys.stderr.write(f"{self.log_name}: " + (format % args) + "\n")

    def request_id(self) -> tuple[str, str]:
        """The header that names a response, as the real service sends it."""
        raise NotImplementedError

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send_json(self, status: int, body: bytes, extra_headers=()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header(*self.request_id())
        for name, value in extra_headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def send_requests(self) -> None:
        """GET /_fake/requests: what this fake was sent."""
        self.send_json(200, json.dumps(self.state.snapshot()).encode())

    def start_chunked(self, content_type: str, extra_headers=()) -> None:
        """A 200 whose body follows in chunks (write_chunk, then end_chunks)."""
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        for name, value in extra_headers:
            self.send_header(name, value)
        self.end_headers()

    def write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def sse(self, payload, event: str | None = None) -> None:
        """One server-sent event in its own chunk: `payload` as compact JSON
        (or as it is, when a string), after an `event:` line when named."""
        text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
        name = f"event: {event}\n" if event is not None else ""
        self.write_chunk(f"{name}data: {text}\n\n".encode())

    def end_chunks(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def cut(self) -> None:
        """Closes the connection in the middle of the chunked body."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(2)
        except OSError:
            pass

    def cut_when_read(self) -> None:
        """Cuts the connection once the client has had time to read what was
        sent: AsyncHTTPClient drops body parts still buffered when the
        connection fails."""
        time.sleep(1.5)
        self.cut()

    def stall(self) -> None:
        """30 s of silence (longer than the tests' idle limits), then a cut."""
        time.sleep(30)
        self.cut()


def serve(handler: type[FakeHandler], state: RequestLog, port: int) -> None:
    """Serves `handler` on 127.0.0.1:`port` (0: any free port), prints the
    port as stdout's first line, and runs until SIGTERM or Ctrl-C."""
    # A parent may start this with signals blocked (Foundation's Process on
    # Linux passes its mask on): unblock them, or SIGTERM would not stop it.
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    handler.state = state
    # A real service's listen backlog, not socketserver's 5: a burst of
    # connections beyond it waits a SYN retransmission (1 s) per overflow.
    ThreadingHTTPServer.request_queue_size = 1024
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass

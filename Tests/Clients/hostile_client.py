"""A hostile client's attacks on a real `keel serve`, as raw sockets.

Each case is what a black-box attack found (issue 15) or what the fix must
keep true. Run as `python3 hostile_client.py BASE_URL CASE...`; it prints one
JSON line per case, {"case", "ok", "detail"}, and exits 1 if any failed. The
server must run with the settings in HardeningTests.swift (short timeouts,
small quotas), which the cases assume.
"""

import base64
import json
import os
import random
import socket
import sys
import time
import urllib.parse
import urllib.request

BASE = sys.argv[1]
HOST = urllib.parse.urlparse(BASE).hostname
PORT = urllib.parse.urlparse(BASE).port

# What HardeningTests.swift starts the server with.
HEADER_TIMEOUT = 1.0
IDLE_TIMEOUT = 2.0
BODY_TIMEOUT = 1.0
LINGER_TIMEOUT = 1.0
HEARTBEAT = 30.0
SESSION_RATE = 8
ACTIVE_JOBS = 3
MAX_EVENTS = 40


class Failure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failure(message)


def connect():
    sock = socket.create_connection((HOST, PORT), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_response(sock, timeout=5.0):
    """Reads one response (head + Content-Length body, or until close)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    check(lines and lines[0].startswith("HTTP/1."), f"no HTTP response: {data[:200]!r}")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if status == 100:
        return status, headers, rest
    length = headers.get("content-length")
    if length is not None:
        while len(rest) < int(length):
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    return status, headers, rest


def closed_within(sock, seconds):
    """Whether the server closes the connection within `seconds` (reads and drops anything sent)."""
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True


def request(method, path, token=None, body=None, headers=None, content_type="application/json"):
    req = urllib.request.Request(BASE + path, method=method, data=body.encode() if isinstance(body, str) else body)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    if body is not None and content_type:
        req.add_header("Content-Type", content_type)
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, dict((k.lower(), v) for k, v in response.headers.items()), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict((k.lower(), v) for k, v in error.headers.items()), error.read()


def json_error(status_body):
    try:
        return json.loads(status_body)["error"]["code"]
    except Exception:
        return None


def session():
    """A new session, created as a client of its own (a forwarded address through
    the trusted proxy 127.0.0.1), so the cases do not spend each other's rate."""
    client = f"198.18.{random.randrange(256)}.{random.randrange(1, 255)}"
    status, _, body = request("POST", "/api/session", headers={"X-Forwarded-For": client})
    check(status == 201, f"POST /api/session answered {status}: {body[:200]!r}")
    return json.loads(body)["token"]


def metric(name):
    status, _, body = request("GET", "/metrics")
    check(status == 200, f"/metrics answered {status}")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def expect_json_error(status, headers, body, want_status, want_code=None):
    check(status == want_status, f"answered {status}, not {want_status}: {body[:300]!r}")
    check(headers.get("content-type", "").startswith("application/json"), f"content type {headers.get('content-type')!r}")
    check(headers.get("x-request-id"), "no X-Request-Id")
    code = json_error(body)
    check(code is not None, f"not a JSON error body: {body[:200]!r}")
    if want_code:
        check(code == want_code, f"error code {code}, not {want_code}")
    return code


# --- the cases -----------------------------------------------------------

def case_sse_abort():
    """200 streams opened and dropped: freed at once, not at the next heartbeat (30 s)."""
    token = session()
    status, _, body = request("POST", "/api/jobs", token, json.dumps({"type": "demo.generate", "input": {"tokens": 2, "delay_ms": 60000}}))
    check(status == 202, f"job: {status} {body[:200]!r}")
    job = json.loads(body)["id"]
    gone_before = metric("keel_sse_clients_gone_total")
    sockets = []
    for _ in range(200):
        sock = connect()
        sock.sendall(f"GET /api/jobs/{job}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
        sockets.append(sock)
    for sock in sockets:
        status, _, _ = read_response(sock)
        check(status == 200, f"stream answered {status}")
    # The gauge counts a stream once its body starts, just after its head.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and metric("keel_sse_open_streams") < 200:
        time.sleep(0.05)
    check(metric("keel_sse_open_streams") >= 200, "the streams were not open")
    for index, sock in enumerate(sockets):
        if index % 2:
            # Half with RST, half with FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and metric("keel_sse_open_streams") > 0:
        time.sleep(0.05)
    open_now = metric("keel_sse_open_streams")
    check(open_now == 0, f"{open_now:.0f} streams still open 3 s after their clients left (heartbeat {HEARTBEAT} s)")
    gone = metric("keel_sse_clients_gone_total") - gone_before
    check(gone >= 200, f"only {gone:.0f} streams noticed their client left")
    return f"200 dropped streams freed within {3 - max(0, deadline - time.monotonic()):.2f} s"


def case_slow_headers():
    sock = connect()
    sock.sendall(b"GET /health HTTP/1.1\r\nHo")
    started = time.monotonic()
    status, headers, body = read_response(sock, timeout=HEADER_TIMEOUT + 3)
    waited = time.monotonic() - started
    expect_json_error(status, headers, body, 408, "request_timeout")
    check(waited < HEADER_TIMEOUT + 1.5, f"answered after {waited:.2f} s")
    check(closed_within(sock, 2), "connection left open after the 408")
    return f"408 after {waited:.2f} s, then closed"


def case_idle_keepalive():
    sock = connect()
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, _ = read_response(sock)
    check(status == 200, f"/health answered {status}")
    started = time.monotonic()
    check(closed_within(sock, IDLE_TIMEOUT + 2), f"idle keep-alive connection still open after {IDLE_TIMEOUT + 2} s")
    return f"closed {time.monotonic() - started:.2f} s after its last response"


def case_silent_connection():
    sock = connect()
    started = time.monotonic()
    check(closed_within(sock, IDLE_TIMEOUT + 2), "a connection that sends nothing is held")
    return f"closed after {time.monotonic() - started:.2f} s"


def case_slow_body():
    sock = connect()
    sock.sendall(b"POST /api/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"data\":")
    started = time.monotonic()
    check(closed_within(sock, BODY_TIMEOUT + 2), "a body that stopped coming holds the connection")
    return f"closed after {time.monotonic() - started:.2f} s without body progress"


def case_early_answer_unread_body():
    sock = connect()
    sock.sendall(b"POST /api/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\nConnection: close\r\n\r\n")
    status, headers, body = read_response(sock)
    expect_json_error(status, headers, body, 401, "session_required")
    started = time.monotonic()
    check(closed_within(sock, LINGER_TIMEOUT + 2), "the server never finished its side after the early answer")
    # The server's FIN alone may be a half-close that keeps reading forever:
    # once the linger time is over, the socket must be gone (bytes sent now are reset).
    time.sleep(LINGER_TIMEOUT + 1.0)
    try:
        for _ in range(3):
            sock.sendall(b"x" * 65536)
            time.sleep(0.1)
    except (BrokenPipeError, ConnectionResetError):
        return f"401, then closed after {time.monotonic() - started:.2f} s"
    raise Failure(f"the half-closed connection still reads the unwanted body {LINGER_TIMEOUT + 1.0} s after the answer")


def framing_faults(path, token, content_type):
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    results = []
    # A body shorter than Content-Length, then the client closes its side.
    sock = connect()
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: {content_type}\r\nContent-Length: 50\r\n\r\n{{\"a\":".encode())
    sock.shutdown(socket.SHUT_WR)
    status, headers, body = read_response(sock)
    expect_json_error(status, headers, body, 400)
    results.append("short body 400")
    # A bad chunk size.
    sock = connect()
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n".encode())
    status, headers, body = read_response(sock)
    expect_json_error(status, headers, body, 400)
    results.append("bad chunk 400")
    # An unknown transfer coding.
    sock = connect()
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: {content_type}\r\nTransfer-Encoding: gzip\r\n\r\nabc".encode())
    status, headers, body = read_response(sock)
    expect_json_error(status, headers, body, 400)
    results.append("unknown coding 400")
    return results


def case_framing_faults():
    token = session()
    done = []
    done += framing_faults("/api/session", None, "application/json")
    done += framing_faults("/api/jobs", token, "application/json")
    done += framing_faults("/api/files", token, "multipart/form-data; boundary=x")
    return f"{len(done)} faults on session, jobs and files routes: all 400 JSON"


def case_parser_rejections():
    seen = []
    for raw, want, code in [
        (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431, "headers_too_large"),
        (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
        (b"GET /health HTTP/3.0\r\nHost: x\r\n\r\n", 505, "http_version_not_supported"),
        (b"FROB /health HTTP/1.1\r\nHost: x\r\n\r\n", 501, "not_implemented"),
        (b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400, "bad_request"),
    ]:
        sock = connect()
        sock.sendall(raw)
        status, headers, body = read_response(sock)
        expect_json_error(status, headers, body, want, code)
        check(headers.get("keel-instance"), "no Keel-Instance")
        seen.append(str(want))
    return "JSON errors " + ", ".join(seen)


def case_methods():
    token = session()
    status, headers, body = request("HEAD", "/api/session", token)
    check(status == 200 and body == b"", f"HEAD /api/session: {status} {body[:100]!r}")
    check(int(headers.get("content-length", "0")) > 0, "HEAD lost the GET's Content-Length")
    status, _, body = request("HEAD", "/health")
    check(status == 200 and body == b"", f"HEAD /health: {status}")
    status, headers, body = request("TRACE", "/api/session", token)
    expect_json_error(status, headers, body, 405, "method_not_allowed")
    check("HEAD" in headers.get("allow", ""), f"Allow is {headers.get('allow')!r}")
    # Expect: 100-continue is answered before the body is sent.
    sock = connect()
    body = b'{"data":{"a":1}}'
    sock.sendall(b"POST /api/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
    started = time.monotonic()
    status, _, rest = read_response(sock, timeout=5)
    check(status == 100, f"no 100 Continue: {status}")
    check(time.monotonic() - started < 2, "100 Continue came late")
    sock.sendall(body)
    status, _, _ = read_response(sock) if not rest else (None, None, None)
    check(status in (201, None), f"after 100 Continue: {status}")
    # Any other expectation is refused (417), as RFC 9110 asks.
    sock = connect()
    sock.sendall(b"POST /api/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: something-else\r\nContent-Length: 2\r\n\r\n{}")
    status, headers, answer = read_response(sock)
    expect_json_error(status, headers, answer, 417, "expectation_failed")
    return "HEAD 200 without body, TRACE 405, 100 Continue at once, other expectations 417"


def case_uploads():
    token = session()
    headers = {"Tus-Resumable": "1.0.0", "Upload-Length": "5"}
    status, answered, _ = request("POST", "/api/uploads", token, b"hello", headers=headers, content_type="application/offset+octet-stream")
    check(status == 201, f"creation-with-upload: {status}")
    location = answered["location"]
    status, answered, body = request(
        "PATCH", location, token, b"extra", headers={"Tus-Resumable": "1.0.0", "Upload-Offset": "5"}, content_type="application/offset+octet-stream")
    expect_json_error(status, answered, body, 413, "payload_too_large")
    status, answered, _ = request("HEAD", location, token, headers={"Tus-Resumable": "1.0.0"})
    check(answered.get("upload-offset") == "5", f"offset after the refused PATCH: {answered.get('upload-offset')}")
    # Creation-with-upload whose body fails its checksum: the reply names the upload.
    headers = {"Tus-Resumable": "1.0.0", "Upload-Length": "10", "Upload-Checksum": "sha1 " + base64.b64encode(b"\0" * 20).decode()}
    status, answered, body = request("POST", "/api/uploads", token, b"0123456789", headers=headers, content_type="application/offset+octet-stream")
    expect_json_error(status, answered, body, 460, "checksum_mismatch")
    location = answered.get("location")
    check(location, "the failed creation's reply does not name the upload")
    status, answered, _ = request("HEAD", location, token, headers={"Tus-Resumable": "1.0.0"})
    check(status == 200 and answered.get("upload-offset") == "0", f"HEAD of the named upload: {status} {answered.get('upload-offset')}")
    # Downloads are never sniffed.
    status, answered, _ = request("POST", "/api/uploads", token, b"<html>", headers={"Tus-Resumable": "1.0.0", "Upload-Length": "6"}, content_type="application/offset+octet-stream")
    status, answered, body = request("GET", answered["location"], token)
    check(status == 200 and answered.get("x-content-type-options") == "nosniff", f"download headers {answered}")
    return "413 past the end, failed creation named, nosniff"


def case_json_content_type():
    token = session()
    # No Content-Type at all (urllib would add a form type, so a raw request).
    sock = connect()
    body = b'{"type": "keel.probe"}'
    sock.sendall(b"POST /api/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s" % (token.encode(), len(body), body))
    status, headers, answer = read_response(sock)
    expect_json_error(status, headers, answer, 415, "unsupported_media_type")
    status, headers, body = request("PATCH", "/api/session", token, '{"a":1}', content_type="text/plain")
    expect_json_error(status, headers, body, 415, "unsupported_media_type")
    return "bodies without a JSON type: 415"


def case_quotas():
    # The windows are fixed minutes: start well inside one.
    if time.time() % 60 > 45:
        time.sleep(61 - time.time() % 60)
    # Sessions per client address per minute (this client is 127.0.0.1).
    statuses = [request("POST", "/api/session")[0] for _ in range(SESSION_RATE + 2)]
    check(429 in statuses, f"no 429 after {len(statuses)} sessions in a minute: {statuses}")
    status, headers, body = request("POST", "/api/session")
    expect_json_error(status, headers, body, 429, "rate_limited")
    check(int(headers.get("retry-after", "0")) >= 1, f"Retry-After {headers.get('retry-after')!r}")
    # A trusted proxy's X-Forwarded-For names another client (127.0.0.1 is trusted here).
    status, _, _ = request("POST", "/api/session", headers={"X-Forwarded-For": "203.0.113.7"})
    check(status == 201, f"a different forwarded client got {status}")
    return f"session creation refused after {statuses.index(429)} in a minute, another forwarded client allowed"


def case_job_quotas():
    # The session quota test runs after the rate limit; use a forwarded address of its own.
    status, _, body = request("POST", "/api/session", headers={"X-Forwarded-For": "203.0.113.8"})
    check(status == 201, f"session: {status}")
    token = json.loads(body)["token"]
    slow = json.dumps({"type": "demo.generate", "input": {"tokens": 1, "delay_ms": 20000}})
    statuses = [request("POST", "/api/jobs", token, slow)[0] for _ in range(ACTIVE_JOBS + 1)]
    check(statuses[:ACTIVE_JOBS] == [202] * ACTIVE_JOBS and statuses[-1] == 429, f"active job quota: {statuses}")
    # Events per job.
    status, _, body = request("POST", "/api/session", headers={"X-Forwarded-For": "203.0.113.9"})
    token = json.loads(body)["token"]
    status, _, body = request("POST", "/api/jobs", token, json.dumps({"type": "demo.generate", "input": {"tokens": 200, "delay_ms": 0}}))
    check(status == 202, f"job: {status}")
    job = json.loads(body)["id"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status, _, body = request("GET", f"/api/jobs/{job}", token)
        state = json.loads(body)
        if state["status"] in ("failed", "succeeded"):
            break
        time.sleep(0.1)
    check(state["status"] == "failed" and state["error"]["code"] == "too_many_events", f"job past the event limit: {state['status']} {state.get('error')}")
    check(state["last_event_id"] <= MAX_EVENTS + 1, f"the log grew to {state['last_event_id']} events")
    return f"4th active job 429; a job stopped at {state['last_event_id']} events"


def case_ops_endpoints():
    status, _, _ = request("GET", "/metrics")
    check(status == 200, f"/metrics from loopback: {status}")
    status, headers, body = request("GET", "/metrics", headers={"X-Forwarded-For": "198.51.100.1"})
    expect_json_error(status, headers, body, 401, "ops_token_required")
    status, headers, body = request("GET", "/system-health", headers={"X-Forwarded-For": "198.51.100.1"})
    expect_json_error(status, headers, body, 401, "ops_token_required")
    return "loopback only without a token"


def case_sse_retry_with_first_event():
    token = session()
    status, _, body = request("POST", "/api/jobs", token, json.dumps({"type": "keel.probe", "input": {"tokens": 1, "delay_ms": 0}}))
    job = json.loads(body)["id"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and json.loads(request("GET", f"/api/jobs/{job}", token)[2])["status"] != "succeeded":
        time.sleep(0.05)
    sock = connect()
    sock.sendall(f"GET /api/jobs/{job}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n".encode())
    data = b""
    sock.settimeout(5)
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    body = data.partition(b"\r\n\r\n")[2].decode("latin-1")
    # Chunked framing aside, the first SSE block must hold both retry: and id: 1.
    first_block = body[body.index("retry:"):].split("\n\n", 1)[0]
    check("id: 1\n" in first_block, f"retry: came in a block of its own: {first_block!r}")
    return "retry: rides with event 1"


def process_cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def health_answers(timeout):
    try:
        sock = socket.create_connection((HOST, PORT), timeout=timeout)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, _, _ = read_response(sock, timeout=timeout)
        sock.close()
        return status == 200
    except OSError:
        return False


def hold_connections(count):
    """Opens `count` connections that send nothing (the kernel completes them while they wait in the backlog)."""
    held = []
    for _ in range(count):
        sock = socket.socket()
        sock.settimeout(5)
        sock.connect((HOST, PORT))
        held.append(sock)
    return held


def case_connection_limit():
    """--max-connections 40: more wait in the backlog; the limit is logged and metered; freed, it serves again."""
    held = hold_connections(60)
    time.sleep(0.5)
    check(not health_answers(1.0), "a request past the connection limit was served at once")
    for sock in held:
        sock.close()
    deadline = time.monotonic() + IDLE_TIMEOUT + 5
    while time.monotonic() < deadline and not health_answers(1.0):
        pass
    check(health_answers(2.0), "the server did not serve again once connections closed")
    check(metric("keel_connection_limit_reached_total") >= 1, "the limit was not counted")
    return "60 connections held, the 41st waited; served again once they closed"


def case_fd_exhaustion():
    """ulimit -n 64 with a higher connection limit: accepts fail with EMFILE; the
    process backs off (no spinning), says so, and serves again once descriptors free."""
    pid = int(os.environ["KEEL_PID"])
    held = hold_connections(120)
    time.sleep(1.0)
    before = process_cpu_seconds(pid)
    time.sleep(3.0)
    spent = process_cpu_seconds(pid) - before
    check(spent < 0.6, f"the process spent {spent:.2f} s of CPU in 3 s out of file descriptors (spinning)")
    for sock in held:
        sock.close()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not health_answers(1.0):
        time.sleep(0.2)
    check(health_answers(2.0), "the server did not serve again once descriptors were free")
    check(metric("keel_accept_errors_total") >= 1, "the failed accepts were not counted")
    check(metric("keel_connections_shed_total") >= 1, "no connection was shed to end the failing accept")
    return f"{spent:.2f} s of CPU in 3 s at the limit; served again after"


CASES = {name[len("case_"):]: fn for name, fn in globals().items() if name.startswith("case_")}

if __name__ == "__main__":
    failed = 0
    for name in sys.argv[2:] or list(CASES):
        try:
            detail = CASES[name]()
            print(json.dumps({"case": name, "ok": True, "detail": detail}), flush=True)
        except Exception as error:  # noqa: BLE001 - every failure is a finding
            failed += 1
            print(json.dumps({"case": name, "ok": False, "detail": f"{type(error).__name__}: {error}"}), flush=True)
    sys.exit(1 if failed else 0)

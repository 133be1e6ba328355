"""Time from a chat question to its answer's first token through Keel's API,
without a browser (bench/web.sh, issue 20): the same request the page makes,
less the page.

    python3 bench/chat_first_token.py KEEL_URL COUNT WARMUP

Creates a session and a chat, then asks COUNT + WARMUP questions one after
the other, each `POST /api/chats/{id}/messages` with `Accept:
text/event-stream` (the reply's stream in the same response), timing from
the request written to the first `token` event, and reading each stream to
its `done`. Prints `FIRST requests=N p50=… p95=… max=…` (ms). Standard
library only.
"""

import http.client
import json
import math
import sys
import time
import urllib.parse
import uuid


def percentile(values, p):
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def main():
    url, count, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)

    def call(method, path, body=None, headers=None):
        conn.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        data = response.read()
        if response.status >= 300:
            sys.exit(f"{method} {path}: {response.status} {data[:300]!r}")
        return json.loads(data)

    token = call("POST", "/api/session")["token"]
    auth = {"Authorization": f"Bearer {token}"}
    chat = call("POST", "/api/chats", {}, auth)["id"]
    times = []
    for i in range(count + warmup):
        started = time.perf_counter()
        conn.request("POST", f"/api/chats/{chat}/messages", body=json.dumps({"content": f"question {i}: what is new?"}),
                     headers={**auth, "Content-Type": "application/json", "Accept": "text/event-stream",
                              "Idempotency-Key": str(uuid.uuid4())})
        response = conn.getresponse()
        if response.status != 200:
            sys.exit(f"question {i}: {response.status} {response.read()[:300]!r}")
        first = None
        event = None
        while True:
            line = response.readline()
            if not line:
                sys.exit(f"question {i}: the stream ended before done")
            line = line.decode().rstrip("\r\n")
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line == "" and event:
                if event == "token" and first is None:
                    first = time.perf_counter()
                if event == "done":
                    break
                event = None
        # The rest of the chunked body (its last chunk) before the next request.
        response.read()
        if first is None:
            sys.exit(f"question {i}: no token event")
        if i >= warmup:
            times.append((first - started) * 1000)
    print(f"FIRST requests={len(times)} p50={percentile(times, 50):.1f} p95={percentile(times, 95):.1f} max={max(times):.1f}")


if __name__ == "__main__":
    main()

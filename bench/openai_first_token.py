"""Time to first token of a streamed OpenAI chat completion, one request at a
time on one keep-alive connection (bench/openai-proxy.sh, issue 19).

    python3 bench/openai_first_token.py URL BODY_FILE TOKENS REQUESTS WARMUP [KEY]

URL is the full /v1/chat/completions URL; BODY_FILE the JSON body (with
"stream": true). For each timed request: from the request written to the
response's head (ttfb), to the first content chunk (`tok0 `) and to the
end of the stream. Every response must be status 200 with the whole text
(`tok0 … tok{TOKENS-1} `, the deltas joined) and `data: [DONE]`; the run
fails otherwise. Prints one line: `FIRST requests=N ttfb_p50=… ttfb_p99=…
first_p50=… first_p99=… total_p50=… total_p99=…` (ms). Standard library only.
"""

import http.client
import json
import math
import sys
import time
import urllib.parse


def percentile(values, p):
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def text_of(stream):
    text = []
    for line in stream.split(b"\n"):
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        for choice in chunk.get("choices") or []:
            piece = (choice.get("delta") or {}).get("content")
            if piece:
                text.append(piece)
    return "".join(text)


def main():
    url, body_file, tokens, requests, warmup = sys.argv[1:6]
    key = sys.argv[6] if len(sys.argv) > 6 else ""
    tokens, requests, warmup = int(tokens), int(requests), int(warmup)
    expected = "".join(f"tok{i} " for i in range(tokens))
    with open(body_file, "rb") as f:
        body = f.read()
    parts = urllib.parse.urlsplit(url)
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if key:
        headers["Authorization"] = "Bearer " + key
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    ttfb, first, total = [], [], []
    for index in range(warmup + requests):
        start = time.perf_counter()
        connection.request("POST", parts.path, body=body, headers=headers)
        response = connection.getresponse()
        head = time.perf_counter()
        received = b""
        first_at = None
        while True:
            data = response.read1(65536)
            if not data:
                break
            received += data
            if first_at is None and b"tok0 " in received:
                first_at = time.perf_counter()
        # With a Content-Length, read1 stops at the end without closing the
        # response: read() does, so the connection can carry the next one.
        received += response.read()
        end = time.perf_counter()
        if response.status != 200 or first_at is None:
            sys.exit(f"request {index}: status {response.status}: {received[:300]!r}")
        if text_of(received) != expected or not received.rstrip().endswith(b"data: [DONE]"):
            sys.exit(f"request {index}: the text differs or no [DONE]: {received[-300:]!r}")
        if index >= warmup:
            ttfb.append((head - start) * 1000)
            first.append((first_at - start) * 1000)
            total.append((end - start) * 1000)
    fields = [f"requests={requests}"]
    for name, values in (("ttfb", ttfb), ("first", first), ("total", total)):
        fields.append(f"{name}_p50={percentile(values, 50):.3f} {name}_p99={percentile(values, 99):.3f}")
    print("FIRST " + " ".join(fields))


if __name__ == "__main__":
    main()

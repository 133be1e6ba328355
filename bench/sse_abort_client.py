"""Opens STREAMS event streams on one job, WAVE at a time, and drops each as
soon as its response head arrives (half with FIN, half with RST): what a
hostile or flaky client does. Prints one JSON line with how many were opened."""

import json
import socket
import sys
import time

host, port, token, job, streams, wave = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
request = f"GET /api/jobs/{job}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
opened = 0
started = time.monotonic()
while opened < streams:
    batch = []
    for _ in range(min(wave, streams - opened)):
        sock = socket.create_connection((host, port), timeout=30)
        sock.sendall(request)
        batch.append(sock)
    for index, sock in enumerate(batch):
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
        if not head.startswith(b"HTTP/1.1 200"):
            sys.exit(f"stream answered {head[:80]!r}")
        if index % 2:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
    opened += len(batch)
print(json.dumps({"streams": opened, "seconds": round(time.monotonic() - started, 2)}))

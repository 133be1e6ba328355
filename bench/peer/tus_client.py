"""One tus upload, the same way against any server, timed.

Usage: tus_client.py ENDPOINT FILE CHUNK_BYTES [BEARER_TOKEN]

POSTs to ENDPOINT (Upload-Length, filename metadata), then PATCHes the file
in CHUNK_BYTES pieces over one keep-alive connection, one chunk in memory at
a time. Prints JSON: bytes, seconds (first PATCH to last answer), MB/s.
"""
import base64
import json
import os
import sys
import time
from urllib.parse import urljoin

import requests

endpoint, path, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3])
token = sys.argv[4] if len(sys.argv) > 4 else None
headers = {"Tus-Resumable": "1.0.0"}
if token:
    headers["Authorization"] = "Bearer " + token
size = os.path.getsize(path)
session = requests.Session()
name = base64.b64encode(os.path.basename(path).encode()).decode()
created = session.post(endpoint, headers={**headers, "Upload-Length": str(size), "Upload-Metadata": "filename " + name})
created.raise_for_status()
location = urljoin(endpoint, created.headers["Location"])
offset = 0
started = time.monotonic()
with open(path, "rb") as source:
    while offset < size:
        source.seek(offset)
        data = source.read(chunk)
        answer = session.patch(
            location,
            data=data,
            headers={**headers, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"},
        )
        if answer.status_code != 204:
            sys.exit(f"PATCH at {offset} answered {answer.status_code}: {answer.text[:200]}")
        offset = int(answer.headers["Upload-Offset"])
seconds = time.monotonic() - started
print(json.dumps({"bytes": size, "seconds": round(seconds, 3), "mb_per_s": round(size / seconds / 1e6, 1), "location": location}))

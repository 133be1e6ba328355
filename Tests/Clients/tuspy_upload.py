"""Uploads a file to Keel with the official Python tus client (tuspy), unmodified.

Usage: tuspy_upload.py SERVER_URL TOKEN FILE

Sends the first half, then resumes with a fresh uploader that knows only the
upload URL (as a restarted client would): tuspy asks HEAD for the offset and
sends the rest with sha1 Upload-Checksum headers. Prints JSON with the upload
URL and the offset it resumed from.
"""
import json
import sys

from tusclient import client

server, token, path = sys.argv[1:4]
tus = client.TusClient(server + "/api/uploads", headers={"Authorization": "Bearer " + token})
first = tus.uploader(
    path,
    chunk_size=1 << 20,
    metadata={"filename": "tuspy.bin", "filetype": "application/octet-stream"},
    upload_checksum=True,
)
size = first.get_file_size()
first.upload(stop_at=size // 2)

resumed = tus.uploader(path, url=first.url, chunk_size=1 << 20, upload_checksum=True, retries=3, retry_delay=1)
resumed_from = resumed.offset
resumed.upload()
print(json.dumps({"url": first.url, "resumed_from": resumed_from, "size": size}))

"""One tus 1.0.0 upload, the same way against any server, timed.

Usage:
  tus_client.py --url ENDPOINT --file PATH --chunk BYTES [--bearer TOKEN]
                [--client requests|httpx|tuspy] [--checksum sha1|sha256|md5]

requests (default) and httpx: POST to ENDPOINT with Upload-Length (and filename
and filetype in Upload-Metadata), then PATCH the file in --chunk pieces over one
keep-alive connection, stop-and-wait (each PATCH waits for its 204, whose
Upload-Offset must be the next offset), one chunk in memory at a time.
tuspy: the official Python tus client (tusclient.Uploader) does the same with
its own requests calls (a new connection per request), so it shows a stock
client works; its figure is not the one to compare.

The clock runs from the POST to the last PATCH's answer. A HEAD afterwards
(not timed) checks that the server reports the whole file. Prints one JSON
line: bytes, seconds, mb_per_s (MB = 10^6 bytes), mib_per_s, patches, client,
location.
"""
import argparse
import base64
import hashlib
import json
import os
import sys
import time
from urllib.parse import urljoin

TUS = {"Tus-Resumable": "1.0.0"}


def arguments():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the tus creation endpoint, e.g. http://127.0.0.1:8080/api/uploads")
    parser.add_argument("--file", required=True, help="the file to upload")
    parser.add_argument("--chunk", required=True, type=int, help="bytes per PATCH")
    parser.add_argument("--bearer", help="sent as 'Authorization: Bearer TOKEN' on every request")
    parser.add_argument("--client", choices=("requests", "httpx", "tuspy"), default="requests")
    parser.add_argument("--checksum", choices=("sha1", "sha256", "md5"), help="send Upload-Checksum on every PATCH (tuspy: sha1 only)")
    return parser.parse_args()


def checksum_header(algorithm, data):
    return algorithm + " " + base64.b64encode(hashlib.new(algorithm, data).digest()).decode()


def metadata_of(path):
    # tuspyserver's HEAD answers 400 unless both are present.
    return {"filename": os.path.basename(path), "filetype": "application/octet-stream"}


def upload_with(http, args, headers, size):
    """requests.Session or httpx.Client: returns (location, patches)."""
    metadata = ",".join(k + " " + base64.b64encode(v.encode()).decode() for k, v in metadata_of(args.file).items())
    created = http.post(args.url, headers={**headers, "Upload-Length": str(size), "Upload-Metadata": metadata})
    if created.status_code != 201:
        sys.exit(f"POST {args.url} answered {created.status_code}: {created.text[:200]}")
    location = urljoin(args.url, created.headers["Location"])
    offset = patches = 0
    with open(args.file, "rb") as source:
        while offset < size:
            data = source.read(args.chunk)
            patch_headers = {**headers, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"}
            if args.checksum:
                patch_headers["Upload-Checksum"] = checksum_header(args.checksum, data)
            # requests takes the body as `data`, httpx as `content`.
            body = {"content": data} if args.client == "httpx" else {"data": data}
            answer = http.patch(location, headers=patch_headers, **body)
            if answer.status_code != 204:
                sys.exit(f"PATCH at {offset} answered {answer.status_code}: {answer.text[:200]}")
            offset += len(data)
            patches += 1
            if int(answer.headers["Upload-Offset"]) != offset:
                sys.exit(f"PATCH answered Upload-Offset {answer.headers['Upload-Offset']}, expected {offset}")
    return location, patches


def upload_with_tuspy(args, headers, size):
    from tusclient import client

    tus = client.TusClient(args.url, headers={k: v for k, v in headers.items() if k != "Tus-Resumable"})
    uploader = tus.uploader(
        args.file,
        chunk_size=args.chunk,
        metadata=metadata_of(args.file),
        upload_checksum=args.checksum is not None,
    )
    uploader.upload()
    if uploader.offset != size:
        sys.exit(f"tuspy stopped at {uploader.offset} of {size} bytes")
    return uploader.url, -(-size // args.chunk)


def main():
    args = arguments()
    if args.client == "tuspy" and args.checksum not in (None, "sha1"):
        sys.exit("tuspy sends sha1 checksums only")
    headers = dict(TUS)
    if args.bearer:
        headers["Authorization"] = "Bearer " + args.bearer
    size = os.path.getsize(args.file)

    if args.client == "httpx":
        import httpx

        http = httpx.Client(timeout=120)
    else:
        import requests

        http = requests.Session()

    started = time.monotonic()
    if args.client == "tuspy":
        location, patches = upload_with_tuspy(args, headers, size)
    else:
        location, patches = upload_with(http, args, headers, size)
    seconds = time.monotonic() - started

    head = http.head(location, headers=headers)
    if head.status_code != 200 or int(head.headers.get("Upload-Offset", -1)) != size:
        sys.exit(f"HEAD {location} answered {head.status_code}, Upload-Offset {head.headers.get('Upload-Offset')}, expected {size}")
    http.close()
    print(json.dumps({
        "bytes": size,
        "seconds": round(seconds, 3),
        "mb_per_s": round(size / seconds / 1e6, 1),
        "mib_per_s": round(size / seconds / 1048576, 1),
        "patches": patches,
        "client": args.client,
        "location": location,
    }))


if __name__ == "__main__":
    main()

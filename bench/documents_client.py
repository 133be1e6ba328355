"""HTTP driver for the document benchmarks (bench/documents-*.sh); standard
library only, one keep-alive connection per command.

  documents_client.py session URL
      POST /api/session; prints the token.
  documents_client.py ingest URL TOKEN FILE [--poll-ms 10] [--chunk BYTES]
      tus upload of FILE (POST /api/uploads, PATCHes of --chunk bytes), then
      POST /api/documents {"upload_id"} and GET /api/documents/ID every
      --poll-ms until status is ready or failed, then GET /api/jobs/JOB.
      Prints one JSON line: document, job, job_run_s (finished_at minus
      started_at, the job's own timestamps, millisecond resolution),
      job_total_s (finished_at minus created_at: queueing included),
      wall_s (POST /api/documents to the poll that saw ready; poll-bounded),
      upload_s, passage_count, section_count, pages, status, and
      superseded_retries (ingests that failed "superseded" because the job
      was claimed before the document recorded it, and were restarted).
      With --upload-id ID, FILE is ignored and the upload ID is used.
  documents_client.py upload URL TOKEN FILE [--chunk BYTES]
      the tus upload alone; prints the upload id.
  documents_client.py populate URL TOKEN DIR
      ingest every *.md in DIR (uploads one after another, each document
      submitted as soon as its upload ends), then wait until all are ready;
      prints JSON: documents, passages, seconds.
  documents_client.py search URL TOKEN --query Q [--requests 200] [--limit 10] [--warmup 20]
      GET /api/search?q=Q&limit=N sequentially on one keep-alive connection;
      prints JSON: p50_ms, p90_ms, p99_ms, max_ms, mean_ms, results (of the
      first response), requests.
"""
import argparse
import base64
import http.client
import json
import os
import sys
import time
import urllib.parse


class Client:
    def __init__(self, url, token=None):
        parsed = urllib.parse.urlsplit(url)
        self.host, self.port = parsed.hostname, parsed.port
        self.token = token
        self.connection = http.client.HTTPConnection(self.host, self.port, timeout=600)

    def request(self, method, path, body=None, headers=None):
        headers = dict(headers or {})
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        for attempt in (1, 2):
            try:
                self.connection.request(method, path, body=body, headers=headers)
                response = self.connection.getresponse()
                return response.status, response.getheaders(), response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                if attempt == 2:
                    raise
                self.connection.close()
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=600)

    def json(self, method, path, payload=None, expect=(200,)):
        body = None if payload is None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        status, _, data = self.request(method, path, body, headers)
        if status not in expect:
            sys.exit(f"{method} {path} answered {status}: {data[:300]!r}")
        return json.loads(data) if data else None


def parse_time(text):
    # 2026-11-22T21:04:15.357Z
    from datetime import datetime, timezone
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def tus_upload(client, path, chunk):
    size = os.path.getsize(path)
    name = os.path.basename(path)
    metadata = "filename " + base64.b64encode(name.encode()).decode()
    status, headers, data = client.request(
        "POST", "/api/uploads", headers={"Tus-Resumable": "1.0.0", "Upload-Length": str(size), "Upload-Metadata": metadata})
    if status != 201:
        sys.exit(f"POST /api/uploads answered {status}: {data[:300]!r}")
    location = dict((k.lower(), v) for k, v in headers)["location"]
    path_part = urllib.parse.urlsplit(location).path
    offset = 0
    with open(path, "rb") as source:
        while offset < size:
            piece = source.read(chunk)
            status, _, data = client.request(
                "PATCH", path_part, body=piece,
                headers={"Tus-Resumable": "1.0.0", "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"})
            if status != 204:
                sys.exit(f"PATCH {path_part} answered {status}: {data[:300]!r}")
            offset += len(piece)
    return path_part.rstrip("/").rsplit("/", 1)[-1]


def submit(client, upload_id):
    document = client.json("POST", "/api/documents", {"upload_id": upload_id}, expect=(200, 202))
    return document


def ingest(args):
    client = Client(args.url, args.token)
    started = time.monotonic()
    upload_id = args.upload_id or tus_upload(client, args.file, args.chunk)
    uploaded = time.monotonic()
    poll = args.poll_ms / 1000
    superseded = 0
    while True:
        document = submit(client, upload_id)
        doc_id = document["id"]
        while True:
            current = client.json("GET", f"/api/documents/{doc_id}")
            if current["status"] != "processing":
                break
            time.sleep(poll)
        # A job claimed before POST /api/documents recorded it as the
        # document's ingest fails "superseded" (a race in Keel, seen on
        # 2026-12-03); POST again restarts the failed document. Counted.
        if current["status"] == "failed" and (current.get("error") or {}).get("code") == "superseded" and superseded < 3:
            superseded += 1
            print(f"document {doc_id}: ingest failed 'superseded' (job claimed before it was assigned); restarting", file=sys.stderr)
            uploaded = time.monotonic()
            continue
        break
    ended = time.monotonic()
    # The document turns ready inside the job's last transaction; the job
    # itself is marked finished just after.
    while True:
        job = client.json("GET", f"/api/jobs/{current['job_id']}")
        if job.get("finished_at"):
            break
        time.sleep(poll)
    out = {
        "document": doc_id, "job": job["id"], "status": current["status"], "error": current.get("error"),
        "job_run_s": round(parse_time(job["finished_at"]) - parse_time(job["started_at"]), 3) if job.get("finished_at") else None,
        "job_total_s": round(parse_time(job["finished_at"]) - parse_time(job["created_at"]), 3) if job.get("finished_at") else None,
        "wall_s": round(ended - uploaded, 4), "upload_s": round(uploaded - started, 4),
        "passage_count": current["passage_count"], "section_count": current["section_count"], "pages": current.get("pages"),
        "chars": current.get("chars"), "superseded_retries": superseded,
    }
    print(json.dumps(out))
    if current["status"] != "ready":
        sys.exit(f"document {doc_id} ended {current['status']}: {current.get('error')}")


def populate(args):
    client = Client(args.url, args.token)
    files = sorted(os.path.join(args.dir, f) for f in os.listdir(args.dir) if f.endswith(".md"))
    started = time.monotonic()
    ids = []
    for path in files:
        upload_id = tus_upload(client, path, args.chunk)
        ids.append(submit(client, upload_id)["id"])
    uploaded = time.monotonic()
    pending = set(ids)
    passages = 0
    failed = []
    superseded = 0
    while pending:
        for doc_id in sorted(pending):
            current = client.json("GET", f"/api/documents/{doc_id}")
            if current["status"] == "processing":
                continue
            if current["status"] == "failed" and (current.get("error") or {}).get("code") == "superseded" and superseded < 50:
                superseded += 1  # see ingest(): restart it
                submit(client, current["upload_id"])
                continue
            pending.discard(doc_id)
            if current["status"] == "ready":
                passages += current["passage_count"]
            else:
                failed.append((doc_id, current.get("error")))
        if pending:
            time.sleep(0.2)
    print(json.dumps({"documents": len(ids), "passages": passages, "failed": len(failed), "superseded_retries": superseded,
                      "upload_s": round(uploaded - started, 1), "seconds": round(time.monotonic() - started, 1)}))
    if failed:
        sys.exit(f"{len(failed)} documents failed, e.g. {failed[0]}")


def percentile(sorted_values, p):
    # nearest-rank
    import math
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def search(args):
    client = Client(args.url, args.token)
    # %20 for spaces (Keel reads "+" as a space too, since bc9ac92).
    if args.floor:
        # The floor: a request that touches the store once (the session
        # lookup every search pays too) and does no search, same client.
        path = "/api/session"
    else:
        path = "/api/search?" + urllib.parse.urlencode({"q": args.query, "limit": args.limit}, quote_via=urllib.parse.quote)
    results = None
    for _ in range(args.warmup):
        status, _, data = client.request("GET", path)
        if status != 200:
            sys.exit(f"GET {path} answered {status}: {data[:300]!r}")
        if results is None:
            results = 0 if args.floor else len(json.loads(data)["results"])
    times = []
    for _ in range(args.requests):
        t0 = time.perf_counter()
        status, _, data = client.request("GET", path)
        times.append((time.perf_counter() - t0) * 1000)
        if status != 200:
            sys.exit(f"GET {path} answered {status}: {data[:300]!r}")
    if results is None:
        results = 0 if args.floor else len(json.loads(data)["results"])
    times.sort()
    print(json.dumps({
        "query": args.query, "requests": len(times), "results": results,
        "p50_ms": round(percentile(times, 50), 3), "p90_ms": round(percentile(times, 90), 3),
        "p99_ms": round(percentile(times, 99), 3), "max_ms": round(times[-1], 3), "mean_ms": round(sum(times) / len(times), 3),
    }))


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("session")
    p.add_argument("url")
    p = sub.add_parser("ingest")
    p.add_argument("url"); p.add_argument("token"); p.add_argument("file")
    p.add_argument("--poll-ms", type=float, default=10)
    p.add_argument("--chunk", type=int, default=8 * 1048576)
    p.add_argument("--upload-id", help="an upload already made (by `upload`): skip the upload")
    p = sub.add_parser("upload")
    p.add_argument("url"); p.add_argument("token"); p.add_argument("file")
    p.add_argument("--chunk", type=int, default=8 * 1048576)
    p = sub.add_parser("populate")
    p.add_argument("url"); p.add_argument("token"); p.add_argument("dir")
    p.add_argument("--chunk", type=int, default=8 * 1048576)
    p = sub.add_parser("search")
    p.add_argument("url"); p.add_argument("token")
    p.add_argument("--query", default="")
    p.add_argument("--floor", action="store_true", help="time GET /api/session instead: the per-request floor")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--limit", type=int, default=10)
    args = parser.parse_args()
    if args.command == "session":
        print(Client(args.url).json("POST", "/api/session", expect=(200, 201))["token"])
    elif args.command == "upload":
        print(tus_upload(Client(args.url, args.token), args.file, args.chunk))
    elif args.command == "ingest":
        ingest(args)
    elif args.command == "populate":
        populate(args)
    elif args.command == "search":
        search(args)


if __name__ == "__main__":
    main()

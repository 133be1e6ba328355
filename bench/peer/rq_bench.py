"""RQ side of the job benchmark (bench/peer-rq.sh): the same measurements as
`keel-bench jobs` and `keel-bench pickup`, against RQ workers on Redis.

  python rq_bench.py throughput REDIS_URL JOBS CONCURRENCY
  python rq_bench.py pickup REDIS_URL SAMPLES PAUSE_MS
"""
import datetime
import statistics
import sys
import threading
import time

from redis import Redis
from rq import Queue

import rq_tasks


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


def summary(values):
    return "n=%d p50=%.2fms p90=%.2fms p99=%.2fms max=%.2fms mean=%.2fms" % (
        len(values), percentile(values, 50), percentile(values, 90), percentile(values, 99), max(values), statistics.mean(values))


def throughput(url, jobs, concurrency):
    # One connection per client thread, like one HTTP connection per Keel client.
    counter = iter(range(jobs))
    lock = threading.Lock()
    latencies = []
    ids = []

    def client():
        queue = Queue("bench", connection=Redis.from_url(url))
        while True:
            with lock:
                if next(counter, None) is None:
                    return
            sent = time.perf_counter()
            job = queue.enqueue(rq_tasks.noop, result_ttl=600)
            elapsed = (time.perf_counter() - sent) * 1000
            with lock:
                latencies.append(elapsed)
                ids.append(job.id)

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    enqueued = time.perf_counter() - start
    queue = Queue("bench", connection=Redis.from_url(url))
    while len(queue) > 0 or queue.started_job_registry.count > 0:
        time.sleep(0.05)
    finished = time.perf_counter() - start
    done = queue.finished_job_registry.count
    failed = queue.failed_job_registry.count
    if done < jobs or failed:
        raise SystemExit("only %d of %d jobs finished (%d failed)" % (done, jobs, failed))
    print("jobs=%d concurrency=%d enqueue=%.0f/s end-to-end=%.0f jobs/s (%.2fs)" % (
        jobs, concurrency, jobs / enqueued, jobs / finished, finished))
    print("create latency: " + summary(latencies))


def parse_time(raw):
    text = raw.decode().rstrip("Z")
    return datetime.datetime.fromisoformat(text)


def pickup(url, samples, pause_ms):
    queue = Queue("bench", connection=Redis.from_url(url))
    pickups = []
    for _ in range(samples):
        time.sleep(pause_ms / 1000)
        job = queue.enqueue(rq_tasks.noop, result_ttl=600)
        for _ in range(2000):
            job.refresh()
            if job.get_status() == "finished":
                break
            time.sleep(0.002)
        # Both timestamps are RQ's own (microseconds), as stored in the job's hash,
        # like Keel's created_at/started_at.
        fields = queue.connection.hgetall(job.key)
        enqueued, started = parse_time(fields[b"enqueued_at"]), parse_time(fields[b"started_at"])
        pickups.append((started - enqueued).total_seconds() * 1000)
    print("pickup: " + summary(pickups))


if __name__ == "__main__":
    mode, url = sys.argv[1], sys.argv[2]
    if mode == "throughput":
        throughput(url, int(sys.argv[3]), int(sys.argv[4]))
    else:
        pickup(url, int(sys.argv[3]), int(sys.argv[4]))

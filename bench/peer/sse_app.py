"""The peer of Keel's stream benchmark (bench/peer-sse.sh): FastAPI with
sse-starlette under uvicorn. Each connection gets EVENTS token events
INTERVAL_MS apart, then a done event, with ids 1, 2, 3… like a Keel job
stream, so `keel-bench streams --raw-url` checks both the same way."""
import asyncio
import os

from fastapi import FastAPI
from sse_starlette.sse import EventSourceResponse

EVENTS = int(os.environ.get("EVENTS", "50"))
INTERVAL = int(os.environ.get("INTERVAL_MS", "20")) / 1000

app = FastAPI()


@app.get("/stream")
async def stream():
    async def events():
        for index in range(EVENTS):
            await asyncio.sleep(INTERVAL)
            yield {"id": str(index + 1), "event": "token", "data": '{"text":"t%d "}' % index}
        yield {"id": str(EVENTS + 1), "event": "done", "data": "{}"}

    return EventSourceResponse(events())

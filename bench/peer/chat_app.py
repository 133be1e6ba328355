"""The peer of Keel's chat burst (bench/chats.sh): the field reports' stack,
FastAPI + sse-starlette under uvicorn, answering a chat message by streaming
an OpenAI-compatible upstream's tokens to the client as Server-Sent Events.

POST /chat/stream {"content": "..."} -> text/event-stream:
  model {"name", "provider"}, token {"text"} per content delta,
  usage {"input_tokens", "output_tokens"}, done {"status": "succeeded"},
with ids 1, 2, 3... like a Keel job stream, so `keel-bench chats --peer`
checks both the same way.

What it does NOT do, unlike Keel: it stores nothing (not the question, not
the answer), keeps no event log (a dropped client cannot resume, and another
process or instance cannot serve the stream), has no sessions, no retries,
no fallback, no job a worker could continue after a crash. It is the cost of
relaying a model's stream and nothing more.

Environment: UPSTREAM (base URL up to and including /v1), MODEL.
"""
import json
import os
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from pydantic import BaseModel
from sse_starlette.sse import EventSourceResponse

UPSTREAM = os.environ.get("UPSTREAM", "http://127.0.0.1:8081/v1")
MODEL = os.environ.get("MODEL", "tokens-200")

# One client per worker process, as an app would hold it. httpx's default
# pool allows 100 connections; the burst needs more than that at once, so
# no limit (a limit would queue requests and charge the peer for it).
client: httpx.AsyncClient | None = None


@asynccontextmanager
async def lifespan(_: FastAPI):
    global client
    client = httpx.AsyncClient(
        base_url=UPSTREAM,
        timeout=httpx.Timeout(120.0, connect=5.0),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=1000),
    )
    yield
    await client.aclose()


app = FastAPI(lifespan=lifespan)


class Message(BaseModel):
    content: str


@app.post("/chat/stream")
async def chat_stream(message: Message):
    request = {
        "model": MODEL,
        "messages": [{"role": "user", "content": message.content}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }

    async def events():
        sequence = 0

        def event(kind, data):
            nonlocal sequence
            sequence += 1
            return {"id": str(sequence), "event": kind, "data": json.dumps(data)}

        yield event("model", {"name": MODEL, "provider": "openai"})
        async with client.stream("POST", "/chat/completions", json=request) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                payload = line[6:]
                if payload == "[DONE]":
                    break
                chunk = json.loads(payload)
                for choice in chunk.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        yield event("token", {"text": text})
                usage = chunk.get("usage")
                if usage:
                    yield event("usage", {"input_tokens": usage["prompt_tokens"], "output_tokens": usage["completion_tokens"]})
        yield event("done", {"status": "succeeded"})

    return EventSourceResponse(events())

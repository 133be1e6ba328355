#!/usr/bin/env python3
"""A fake OpenAI-compatible upstream for Keel's model-provider tests.

Standard library only. Listens on 127.0.0.1, port 0 (or --port), and prints
the port it got as the first line of stdout, then serves:

  POST /v1/chat/completions   streaming (SSE, chunked) and non-streaming,
                              in OpenAI's wire format
  GET  /v1/models             a model list
  GET  /_fake/requests        what this fake was sent (bodies, and whether an
                              Authorization header came with the expected
                              key: never the key itself)

Failure injection is chosen by the request's `model`:

  ok                      N tokens, finish_reason "stop" (or "length" when
                          max_tokens < N), a usage chunk when
                          stream_options.include_usage, then `data: [DONE]`
  reasoning               reasoning_content deltas, then content deltas
  reasoning-field         the same with `reasoning` instead (vLLM, Ollama)
  rate-limit              429, Retry-After: 2, OpenAI's rate-limit error body
  rate-limit-ms           429, retry-after-ms: 1500 only
  quota                   429 insufficient_quota (spend limit: not retryable)
  server-error            500 with OpenAI's server error body
  overloaded              529 overloaded_error
  bad-request             400 invalid_request_error
  cut-after-N             N tokens, then the connection is closed: no [DONE]
                          and no end of the chunked body
  inband-error-after-N    N tokens, then `data: {"error": {...}}`
  stall-after-N           N tokens, then 30 s of silence
  malformed               2 tokens, then a data line that is not JSON
  tokens-N                like ok, with N tokens
  slow-N-MS               N tokens, MS milliseconds apart (non-streaming: the
                          whole answer after N × MS)

A request that asks to continue a cut answer (its last messages: the partial
answer as an assistant message, then Keel's continuation instruction) gets
the tokens after the ones the partial answer holds, so a continued answer
reads as one.

With --api-key KEY, a request whose `Authorization` is not `Bearer KEY` gets
OpenAI's 401. Unlike OpenAI (which masks it), the message echoes the whole
key that was sent, so that tests can check a client never repeats an error
body's secret.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # fake_common, from any working directory
from fake_common import FakeHandler, RequestLog, count_message_tokens, json_object, serve  # noqa: E402

DEFAULT_TOKENS = 6
REASONING_TOKENS = 4
FINGERPRINT = "fp_fake0001"


def continued_from(messages) -> int:
    """Where an answer goes on when the request asks to continue one (a
    partial assistant message, then the continuation instruction Keel's
    router sends): after the tokens the partial answer already has. A real
    model continues from the text; this fake continues its count."""
    if not isinstance(messages, list) or len(messages) < 2:
        return 0
    partial, instruction = messages[-2], messages[-1]
    if not (isinstance(partial, dict) and partial.get("role") == "assistant" and isinstance(instruction, dict)
            and str(instruction.get("content", "")).startswith("Your previous reply was cut off")):
        return 0
    return len(re.findall(r"tok\d+ ", str(partial.get("content", ""))))


def token(i: int) -> str:
    return f"tok{i} "


def reasoning_token(i: int) -> str:
    return f"think{i} "


def count_prompt_tokens(messages) -> int:
    return count_message_tokens(messages) + 3


def error_body(message: str, type_: str, code, param=None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}}).encode()


class State(RequestLog):
    def __init__(self, api_key: str | None):
        super().__init__()
        self.api_key = api_key


class Handler(FakeHandler):
    server_version = "fake-openai/1"
    log_name = "fake_openai"
    state: State  # set on the class by serve()

    def request_id(self) -> tuple[str, str]:
        return "x-request-id", "req_" + uuid.uuid4().hex

    # -- routes -----------------------------------------------------------

    def do_GET(self):
        if self.path == "/_fake/requests":
            self.send_requests()
        elif self.path == "/v1/models":
            names = ["ok", "reasoning", "rate-limit", "server-error", "overloaded"]
            body = {"object": "list", "data": [
                {"id": n, "object": "model", "created": 1700000000, "owned_by": "fake"} for n in names]}
            self.send_json(200, json.dumps(body).encode())
        else:
            self.send_json(404, error_body(f"Unknown request URL: GET {self.path}.", "invalid_request_error",
                                           "unknown_url"))

    def do_POST(self):
        raw = self.read_body()
        if self.path != "/v1/chat/completions":
            self.send_json(404, error_body(f"Unknown request URL: POST {self.path}.", "invalid_request_error",
                                           "unknown_url"))
            return
        authorization = self.headers.get("Authorization")
        expected = self.state.api_key
        auth_ok = authorization is not None and (expected is None or authorization == f"Bearer {expected}")
        body = json_object(raw)
        self.state.record({"path": self.path, "body": body, "authorization_sent": authorization is not None,
                           "authorization_ok": auth_ok})
        if body is None:
            self.send_json(400, error_body("We could not parse the JSON body of your request.",
                                           "invalid_request_error", None))
            return
        if expected is not None and not auth_ok:
            sent = (authorization or "").removeprefix("Bearer ")
            self.send_json(401, error_body(f"Incorrect API key provided: {sent}.", "invalid_request_error",
                                           "invalid_api_key"))
            return
        try:
            self.chat(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def chat(self, body: dict) -> None:
        model = str(body.get("model", ""))
        stream = bool(body.get("stream"))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))

        if model == "rate-limit":
            self.send_json(429, error_body(
                "Rate limit reached for fake in organization org-fake on requests per min (RPM): "
                "Limit 3, Used 3, Requested 1. Please try again in 2s.", "requests", "rate_limit_exceeded"),
                [("Retry-After", "2"), ("x-ratelimit-limit-requests", "3"),
                 ("x-ratelimit-remaining-requests", "0"), ("x-ratelimit-reset-requests", "2s")])
            return
        if model == "rate-limit-ms":
            self.send_json(429, error_body("Rate limit reached. Please try again in 1.5s.", "requests",
                                           "rate_limit_exceeded"), [("retry-after-ms", "1500")])
            return
        if model == "quota":
            self.send_json(429, error_body(
                "You exceeded your current quota, please check your plan and billing details.",
                "insufficient_quota", "insufficient_quota"))
            return
        if model == "server-error":
            self.send_json(500, error_body("The server had an error while processing your request. Sorry about that!",
                                           "server_error", None))
            return
        if model == "overloaded":
            self.send_json(529, error_body("Overloaded", "overloaded_error", None))
            return
        if model == "bad-request":
            self.send_json(400, error_body("Invalid value for 'temperature': must be between 0 and 2.",
                                           "invalid_request_error", "invalid_value", "temperature"))
            return

        n = DEFAULT_TOKENS
        pause = 0.0
        reasoning = 0
        reasoning_key = "reasoning_content"
        cut_after = inband_after = stall_after = malformed_after = None
        if m := re.fullmatch(r"cut-after-(\d+)", model):
            cut_after = int(m[1])
            n = max(n, cut_after + 1)
        elif m := re.fullmatch(r"inband-error-after-(\d+)", model):
            inband_after = int(m[1])
            n = max(n, inband_after + 1)
        elif m := re.fullmatch(r"stall-after-(\d+)", model):
            stall_after = int(m[1])
            n = max(n, stall_after + 1)
        elif m := re.fullmatch(r"tokens-(\d+)", model):
            n = int(m[1])
        elif m := re.fullmatch(r"slow-(\d+)-(\d+)", model):
            n = int(m[1])
            pause = int(m[2]) / 1000
        elif model == "malformed":
            malformed_after = 2
        elif model == "reasoning":
            reasoning = REASONING_TOKENS
        elif model == "reasoning-field":
            reasoning = REASONING_TOKENS
            reasoning_key = "reasoning"

        finish = "stop"
        if isinstance(max_tokens, int) and max_tokens < n:
            n = max_tokens
            finish = "length"
        prompt_tokens = count_prompt_tokens(body.get("messages"))
        completion_tokens = n + reasoning
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        }
        ident = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())

        if not stream:
            # A whole answer comes once it is all generated: slow-N-MS takes N × MS.
            time.sleep(pause * n)
            message = {"role": "assistant", "content": "".join(token(i) for i in range(n)), "refusal": None,
                       "annotations": []}
            if reasoning:
                message[reasoning_key] = "".join(reasoning_token(i) for i in range(reasoning))
            completion = {
                "id": ident, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                "usage": usage, "service_tier": "default", "system_fingerprint": FINGERPRINT,
            }
            self.send_json(200, json.dumps(completion).encode())
            return

        self.start_chunked("text/event-stream; charset=utf-8", [("Cache-Control", "no-cache"), self.request_id()])

        def chunk(delta: dict, finish_reason=None) -> dict:
            c = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                 "service_tier": "default", "system_fingerprint": FINGERPRINT,
                 "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
            if include_usage:
                c["usage"] = None
            return c

        self.sse(chunk({"role": "assistant", "content": "", "refusal": None}))
        for i in range(reasoning):
            self.sse(chunk({reasoning_key: reasoning_token(i)}))
        for i in range(continued_from(body.get("messages")), n):
            if pause:
                time.sleep(pause)
            if i == cut_after:
                self.cut_when_read()
                return
            if i == inband_after:
                self.sse({"error": {"message": "The model produced invalid content.", "type": "server_error",
                                    "param": None, "code": "invalid_model_output"}})
                self.end_chunks()
                return
            if i == stall_after:
                self.stall()
                return
            if i == malformed_after:
                self.sse('{"id": "' + ident + '", "choices": [{"delta": {"content": "brok')
                self.end_chunks()
                return
            self.sse(chunk({"content": token(i)}))
        self.sse(chunk({}, finish))
        if include_usage:
            self.sse({"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                      "service_tier": "default", "system_fingerprint": FINGERPRINT, "choices": [],
                      "usage": usage})
        self.sse("[DONE]")
        self.end_chunks()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default=None, help="the key a request must send as Bearer")
    args = parser.parse_args()
    serve(Handler, State(args.api_key), args.port)


if __name__ == "__main__":
    main()

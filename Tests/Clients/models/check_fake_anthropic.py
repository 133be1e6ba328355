#!/usr/bin/env python3
"""Fidelity check of fake_anthropic.py: the official `anthropic` Python client
reads the fake's streams and errors, and must see what Keel's client is tested
to see.

Exit codes: 0 all checks passed, 1 a check failed, 3 the `anthropic` package
is missing (the caller decides whether that is a skip or a failure).
Prints one line per check and a closing 'N passed, N failed' line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import traceback

try:
    import anthropic
except ImportError:
    print("anthropic package not installed", file=sys.stderr)
    sys.exit(3)

HERE = os.path.dirname(os.path.abspath(__file__))
KEY = "sk-ant-fidelity-check-0123456789"
SYSTEM = "be brief"
MESSAGES = [{"role": "user", "content": "say some tokens"}]
TOKENS = "".join(f"tok{i} " for i in range(6))
THINKING = "".join(f"think{i} " for i in range(4))


def start_fake() -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "fake_anthropic.py"), "--api-key", KEY],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    return proc, int(line.strip())


def read_raw(client, model, max_tokens=1024, **kwargs):
    """Reads the raw event stream: every event must parse into the client's types."""
    text, thinking, signature, stop, input_tokens, output_tokens = "", "", "", None, None, None
    types = []
    stream = client.messages.create(model=model, max_tokens=max_tokens, system=SYSTEM, messages=MESSAGES,
                                    stream=True, **kwargs)
    for event in stream:
        types.append(event.type)
        if event.type == "message_start":
            assert event.message.id.startswith("msg_"), event.message.id
            assert event.message.model == model
            assert event.message.role == "assistant"
            input_tokens = event.message.usage.input_tokens
        elif event.type == "content_block_delta":
            if event.delta.type == "text_delta":
                text += event.delta.text
            elif event.delta.type == "thinking_delta":
                thinking += event.delta.thinking
            elif event.delta.type == "signature_delta":
                signature += event.delta.signature
        elif event.type == "message_delta":
            stop = event.delta.stop_reason
            output_tokens = event.usage.output_tokens
    return text, thinking, signature, stop, input_tokens, output_tokens, types


def check_ok(client):
    text, thinking, _, stop, input_tokens, output_tokens, types = read_raw(client, "ok")
    assert text == TOKENS, repr(text)
    assert thinking == ""
    assert stop == "end_turn", stop
    assert input_tokens > 0 and output_tokens == 6, (input_tokens, output_tokens)
    assert types[0] == "message_start" and types[-1] == "message_stop", types
    for expected in ("content_block_start", "content_block_stop", "message_delta"):
        assert expected in types, types


def check_max_tokens(client):
    text, _, _, stop, _, output_tokens, _ = read_raw(client, "ok", max_tokens=3)
    assert text == "tok0 tok1 tok2 ", repr(text)
    assert stop == "max_tokens", stop
    assert output_tokens == 3


def check_thinking(client):
    text, thinking, signature, stop, _, output_tokens, _ = read_raw(
        client, "thinking", max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024})
    assert text == TOKENS, repr(text)
    assert thinking == THINKING, repr(thinking)
    assert signature, "no signature_delta"
    assert stop == "end_turn" and output_tokens == 10


def check_stream_helper(client):
    """The SDK's accumulating helper builds the final message from the events."""
    with client.messages.stream(model="thinking", max_tokens=2048, system=SYSTEM, messages=MESSAGES,
                                thinking={"type": "enabled", "budget_tokens": 1024}) as stream:
        streamed = "".join(stream.text_stream)
        message = stream.get_final_message()
    assert streamed == TOKENS, repr(streamed)
    assert [block.type for block in message.content] == ["thinking", "text"], message.content
    assert message.content[0].thinking == THINKING and message.content[0].signature
    assert message.content[1].text == TOKENS
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 10 and message.usage.input_tokens > 0


def check_non_streaming(client):
    message = client.messages.create(model="ok", max_tokens=1024, system=SYSTEM, messages=MESSAGES)
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].text == TOKENS
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 6


def expect_status(client, model, error_type, status, error_kind):
    try:
        client.messages.create(model=model, max_tokens=1024, messages=MESSAGES, stream=True)
    except error_type as error:
        assert error.status_code == status, error.status_code
        assert error.body["error"]["type"] == error_kind, error.body
        return error
    raise AssertionError(f"no {error_type.__name__} for {model}")


def check_rate_limit(client):
    error = expect_status(client, "rate-limit", anthropic.RateLimitError, 429, "rate_limit_error")
    assert error.response.headers.get("retry-after") == "2"


def check_overloaded(client):
    # 529 has no class of its own in every SDK version: InternalServerError
    # (>= 500) or, newer, OverloadedError; both are APIStatusError.
    expect_status(client, "overloaded", anthropic.APIStatusError, 529, "overloaded_error")


def check_server_error(client):
    expect_status(client, "server-error", anthropic.InternalServerError, 500, "api_error")


def check_bad_request(client):
    expect_status(client, "bad-request", anthropic.BadRequestError, 400, "invalid_request_error")


def check_forbidden(client):
    expect_status(client, "forbidden", anthropic.PermissionDeniedError, 403, "permission_error")


def check_spend_limit(client):
    error = expect_status(client, "spend-limit", anthropic.RateLimitError, 429, "billing_error")
    assert "credit balance" in error.message, error.message


def check_inband_overloaded(client):
    text = ""
    try:
        for event in client.messages.create(model="overloaded-after-2", max_tokens=1024, messages=MESSAGES,
                                            stream=True):
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                text += event.delta.text
    except anthropic.APIError as error:
        assert "Overloaded" in error.message, error.message
        assert error.body["error"]["type"] == "overloaded_error", error.body
    else:
        raise AssertionError("no APIError")
    assert text == "tok0 tok1 ", repr(text)


def check_unauthorized(port):
    client = anthropic.Anthropic(base_url=f"http://127.0.0.1:{port}", api_key="sk-ant-wrong", max_retries=0)
    try:
        client.messages.create(model="ok", max_tokens=10, messages=MESSAGES)
    except anthropic.AuthenticationError as error:
        assert error.status_code == 401
    else:
        raise AssertionError("no AuthenticationError")


def check_bearer(port):
    client = anthropic.Anthropic(base_url=f"http://127.0.0.1:{port}", api_key=None, auth_token=KEY, max_retries=0)
    message = client.messages.create(model="ok", max_tokens=1024, messages=MESSAGES)
    assert message.content[0].text == TOKENS


def main() -> int:
    proc, port = start_fake()
    passed = failed = 0
    try:
        client = anthropic.Anthropic(base_url=f"http://127.0.0.1:{port}", api_key=KEY, max_retries=0, timeout=20)
        checks = [lambda c=check: c(client) for check in (
            check_ok, check_max_tokens, check_thinking, check_stream_helper, check_non_streaming,
            check_rate_limit, check_overloaded, check_server_error, check_bad_request, check_forbidden,
            check_spend_limit, check_inband_overloaded)]
        names = ["check_ok", "check_max_tokens", "check_thinking", "check_stream_helper", "check_non_streaming",
                 "check_rate_limit", "check_overloaded", "check_server_error", "check_bad_request",
                 "check_forbidden", "check_spend_limit", "check_inband_overloaded"]
        checks += [lambda: check_unauthorized(port), lambda: check_bearer(port)]
        names += ["check_unauthorized", "check_bearer"]
        for name, check in zip(names, checks):
            try:
                check()
                print(f"ok {name}")
                passed += 1
            except Exception:
                print(f"FAIL {name}")
                traceback.print_exc()
                failed += 1
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    print(f"anthropic {anthropic.__version__}")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

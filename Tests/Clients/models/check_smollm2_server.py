#!/usr/bin/env python3
"""Protocol check of smollm2_server.py: the official `openai` Python client
reads the real model's streaming and non-streaming answers. It checks the
wire format (chunks parse, a role first, text, a finish reason, usage that
adds up), never the words: a 135M model says what it says.

The server runs under the model's Python (--model-python, default
$KEEL_TEST_MODEL_PYTHON) with the GGUF file (--model, default
$KEEL_TEST_MODEL_FILE); this script runs under a Python that has `openai`.

Exit codes: 0 all checks passed, 1 a check failed, 3 the `openai` package
is missing, 4 the model is not available (no model Python or file, or the
server did not start); the caller decides whether 3 and 4 are a skip or a
failure. Prints one line per check and a closing 'N passed, N failed' line.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import traceback

try:
    import openai
except ImportError:
    print("openai package not installed", file=sys.stderr)
    sys.exit(3)

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = "smollm2-135m-instruct"
MESSAGES = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Name three colours."}]
# A model under load (two cores shared with a build and other tests) can take tens of seconds.
TIMEOUT = 120


def start_server(python: str, model: str) -> tuple[subprocess.Popen, int] | None:
    proc = subprocess.Popen([python, os.path.join(HERE, "smollm2_server.py"), "--model", model],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    try:
        return proc, int(line.strip())
    except ValueError:
        proc.kill()
        proc.wait()
        return None


def read_stream(client, **kwargs):
    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, temperature=0,
                                                 stream_options={"include_usage": True}, **kwargs))
    assert chunks, "no chunks"
    ids = {c.id for c in chunks}
    assert len(ids) == 1 and ids.pop().startswith("chatcmpl-"), ids
    for c in chunks:
        assert c.object == "chat.completion.chunk", c.object
        assert c.model == MODEL, c.model
    assert chunks[0].choices and chunks[0].choices[0].delta.role == "assistant", chunks[0]
    *body, last = chunks
    assert last.choices == [] and last.usage is not None, f"the last chunk is not the usage chunk: {last}"
    assert all(c.usage is None for c in body), "usage before the last chunk"
    finishes = [ch.finish_reason for c in body for ch in c.choices if ch.finish_reason is not None]
    assert len(finishes) == 1, f"one finish_reason expected: {finishes}"
    assert body[-1].choices[0].finish_reason is not None, "the finish_reason is not on the last choice chunk"
    text = "".join(ch.delta.content or "" for c in body for ch in c.choices)
    return text, finishes[0], last.usage, len(body)


def check_usage(usage, max_tokens: int | None = None) -> None:
    assert usage.prompt_tokens > 0, usage
    assert usage.completion_tokens > 0, usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, usage
    if max_tokens is not None:
        assert usage.completion_tokens <= max_tokens, usage


def check_streaming(client):
    started = time.monotonic()
    text, finish, usage, chunks = read_stream(client, max_tokens=24)
    assert text.strip(), repr(text)
    assert finish in ("stop", "length"), finish
    check_usage(usage, 24)
    assert (finish == "length") == (usage.completion_tokens == 24), (finish, usage)
    # One chunk per generated token (plus the role and finish chunks; a stop
    # sequence or a split UTF-8 character can merge pieces, never add any).
    assert chunks <= usage.completion_tokens + 2, (chunks, usage)
    assert chunks >= 3, chunks
    print(f"   streamed {usage.completion_tokens} tokens in {chunks} chunks, {time.monotonic() - started:.2f} s, "
          f"finish {finish}: {text[:60]!r}")


def check_max_tokens(client):
    text, finish, usage, _ = read_stream(client, max_completion_tokens=3)
    check_usage(usage, 3)
    assert (finish == "length") == (usage.completion_tokens == 3), (finish, usage)


def check_stop(client):
    # The text is cut before the first space, and the reason is "stop" (a
    # 135M model writes a space within 40 tokens).
    text, finish, usage, _ = read_stream(client, max_tokens=40, stop=[" "])
    assert " " not in text, repr(text)
    assert finish == "stop", (finish, usage)


def check_non_streaming(client):
    started = time.monotonic()
    completion = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=24, temperature=0)
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert (choice.message.content or "").strip(), choice
    assert choice.finish_reason in ("stop", "length"), choice.finish_reason
    check_usage(completion.usage, 24)
    print(f"   answered {completion.usage.completion_tokens} tokens in {time.monotonic() - started:.2f} s")


def check_models(client):
    assert [m.id for m in client.models.list()] == [MODEL]


def check_unknown_model(client):
    try:
        client.chat.completions.create(model="gpt-nonexistent", messages=MESSAGES)
    except openai.NotFoundError as error:
        assert error.code == "model_not_found", error.code
    else:
        raise AssertionError("no NotFoundError")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-python", default=os.environ.get("KEEL_TEST_MODEL_PYTHON"))
    parser.add_argument("--model", default=os.environ.get("KEEL_TEST_MODEL_FILE"))
    args = parser.parse_args()
    if not args.model_python or not args.model or not os.path.isfile(args.model):
        print("no model: set KEEL_TEST_MODEL_PYTHON and KEEL_TEST_MODEL_FILE (scripts/test does)", file=sys.stderr)
        return 4
    started = start_server(args.model_python, args.model)
    if started is None:
        print("smollm2_server.py did not start (see its stderr above)", file=sys.stderr)
        return 4
    proc, port = started
    passed = failed = 0
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-local", max_retries=0,
                               timeout=TIMEOUT)
        for check in (check_streaming, check_max_tokens, check_stop, check_non_streaming, check_models,
                      check_unknown_model):
            try:
                check(client)
                print(f"ok {check.__name__}", flush=True)
                passed += 1
            except Exception:
                print(f"FAIL {check.__name__}", flush=True)
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

#!/usr/bin/env python3
"""Fidelity check of fake_bedrock.py: botocore's own `bedrock-runtime` client
calls converse_stream on the fake for every mode, signs with SigV4 (or a
Bedrock API key), and reads the event stream with botocore's parser. What it
sees must be what Bedrock's model (service-2.json) says, and what Keel's
client is tested to see: the events, the modeled exceptions (HTTP and
in-band), a checksum failure, and the fake's verdict on signatures.

Exit codes: 0 all checks passed, 1 a check failed, 3 botocore is missing (the
caller decides whether that is a skip or a failure). Prints one line per
check and a closing 'N passed, N failed' line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
import urllib.request

try:
    import botocore
    import botocore.session
    from botocore.config import Config
    from botocore.exceptions import ClientError, EventStreamError
    from botocore.eventstream import ChecksumMismatch
except ImportError:
    print("botocore not installed", file=sys.stderr)
    sys.exit(3)

HERE = os.path.dirname(os.path.abspath(__file__))
REGION = "eu-north-1"
ACCESS_KEY = "AKIAFAKEBEDROCK0001"
SECRET_KEY = "fake/Secret+Key/For/Keel/Fidelity0123456"
API_KEY = "ABSKZmFrZS1iZWRyb2NrLWFwaS1rZXktZm9yLWtlZWw="
MODEL = "anthropic.claude-sonnet-4-5-20250929-v1:0"
TOKENS = "".join(f"tok{i} " for i in range(6))
REASONING = "".join(f"think{i} " for i in range(4))
MESSAGES = [{"role": "user", "content": [{"text": "say some tokens"}]}]
SYSTEM = [{"text": "be brief"}]


def start_fake(*arguments) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "fake_bedrock.py"), *arguments],
                            stdout=subprocess.PIPE, text=True)
    return proc, int(proc.stdout.readline().strip())


def client(port, secret=SECRET_KEY, access=ACCESS_KEY, read_timeout=20):
    session = botocore.session.get_session()
    return session.create_client(
        "bedrock-runtime", region_name=REGION, endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id=access, aws_secret_access_key=secret,
        config=Config(retries={"total_max_attempts": 1}, read_timeout=read_timeout, connect_timeout=5))


def requests(port) -> list[dict]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_fake/requests", timeout=10) as response:
        return json.load(response)


def stream(c, mode, **kwargs):
    """Calls converse_stream and reads every event: (events, text, reasoning, error)."""
    kwargs.setdefault("messages", MESSAGES)
    response = c.converse_stream(modelId=f"{mode}.{MODEL}", **kwargs)
    events, text, reasoning, signature, error = [], "", "", "", None
    try:
        for event in response["stream"]:
            assert len(event) == 1, event
            (name, body), = event.items()
            events.append((name, body))
            if name == "contentBlockDelta":
                delta = body["delta"]
                text += delta.get("text", "")
                reasoning += delta.get("reasoningContent", {}).get("text", "")
                signature += delta.get("reasoningContent", {}).get("signature", "")
    except Exception as caught:  # noqa: BLE001 - the caller asserts on the kind
        error = caught
    return events, text, reasoning, signature, error


def names(events):
    return [name for name, _ in events]


def check_ok(c, port):
    events, text, reasoning, _, error = stream(c, "ok", system=SYSTEM, inferenceConfig={"maxTokens": 50,
                                                                                         "temperature": 0.25})
    assert error is None, error
    assert text == TOKENS and reasoning == "", repr(text)
    assert names(events) == ["messageStart"] + ["contentBlockDelta"] * 6 + ["contentBlockStop", "messageStop",
                                                                             "metadata"], names(events)
    assert events[0][1] == {"role": "assistant"}, events[0]
    assert events[1][1]["contentBlockIndex"] == 0
    assert "p" not in events[1][1], "botocore drops the padding member"
    assert events[-2][1]["stopReason"] == "end_turn", events[-2]
    usage = events[-1][1]["usage"]
    assert usage["outputTokens"] == 6 and usage["inputTokens"] > 0, usage
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]
    assert events[-1][1]["metrics"]["latencyMs"] > 0
    sent = requests(port)[-1]
    assert sent["auth"] == "sigv4" and sent["signature_ok"], sent
    assert sent["model_id"] == f"ok.{MODEL}", sent["model_id"]
    assert sent["raw_path"] == "/model/ok.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse-stream", sent
    assert sent["canonical_uri"] == "/model/ok.anthropic.claude-sonnet-4-5-20250929-v1%253A0/converse-stream", sent
    assert sent["region"] == REGION and sent["service"] == "bedrock", sent
    assert sent["body"]["inferenceConfig"] == {"maxTokens": 50, "temperature": 0.25}, sent["body"]
    assert sent["body"]["system"] == SYSTEM and sent["body"]["messages"] == MESSAGES


def check_max_tokens(c, port):
    events, text, _, _, error = stream(c, "ok", inferenceConfig={"maxTokens": 3})
    assert error is None, error
    assert text == "tok0 tok1 tok2 ", repr(text)
    assert dict(events)["messageStop"]["stopReason"] == "max_tokens"
    assert dict(events)["metadata"]["usage"]["outputTokens"] == 3


def check_reasoning(c, port):
    events, text, reasoning, signature, error = stream(
        c, "reasoning", inferenceConfig={"maxTokens": 4096},
        additionalModelRequestFields={"thinking": {"type": "enabled", "budget_tokens": 2048}})
    assert error is None, error
    assert reasoning == REASONING and text == TOKENS and signature, (reasoning, text, signature)
    indices = [body["contentBlockIndex"] for name, body in events if name == "contentBlockDelta"]
    assert indices == [0] * 5 + [1] * 6, indices
    assert dict(events)["metadata"]["usage"]["outputTokens"] == 10
    sent = requests(port)[-1]["body"]
    assert sent["additionalModelRequestFields"] == {"thinking": {"type": "enabled", "budget_tokens": 2048}}, sent


def check_variants(c, port):
    events, text, _, _, error = stream(c, "tokens-2")
    assert error is None and text == "tok0 tok1 ", (error, text)
    events, text, _, _, error = stream(c, "no-metadata")
    assert error is None and text == TOKENS and names(events)[-1] == "messageStop", names(events)
    events, text, _, _, error = stream(c, "no-stop")
    assert error is None and text == TOKENS and "messageStop" not in names(events), names(events)


def check_arn_model_id(c, port):
    arn = "ok.arn:aws:bedrock:eu-north-1:123456789012:inference-profile/eu." + MODEL
    response = c.converse_stream(modelId=arn, messages=MESSAGES)
    assert "".join(e["contentBlockDelta"]["delta"]["text"] for e in response["stream"] if "contentBlockDelta" in e) \
        == TOKENS
    sent = requests(port)[-1]
    assert sent["model_id"] == arn and sent["signature_ok"], sent
    assert "%2F" in sent["raw_path"] and "%3A" in sent["raw_path"], sent["raw_path"]


def expect_http_error(c, mode, code, status):
    try:
        c.converse_stream(modelId=f"{mode}.{MODEL}", messages=MESSAGES)
    except ClientError as error:
        assert error.response["Error"]["Code"] == code, error.response
        assert error.response["ResponseMetadata"]["HTTPStatusCode"] == status, error.response
        # Modeled errors come out as the client's own exception classes.
        modeled = getattr(c.exceptions, code, None)
        if modeled is not None:
            assert isinstance(error, modeled), type(error)
        return error
    raise AssertionError(f"no ClientError for {mode}")


def check_http_errors(c, port):
    error = expect_http_error(c, "throttle", "ThrottlingException", 429)
    assert error.response["ResponseMetadata"]["HTTPHeaders"]["retry-after"] == "2"
    assert "Too many requests" in error.response["Error"]["Message"]
    for mode, code, status in [
        ("model-not-ready", "ModelNotReadyException", 429),
        ("unavailable", "ServiceUnavailableException", 503),
        ("internal", "InternalServerException", 500),
        ("validation", "ValidationException", 400),
        ("not-found", "ResourceNotFoundException", 404),
        ("access-denied", "AccessDeniedException", 403),
        ("model-timeout", "ModelTimeoutException", 408),
        ("model-error", "ModelErrorException", 424),
    ]:
        expect_http_error(c, mode, code, status)
    # An id that names no mode is Bedrock's invalid model identifier.
    try:
        c.converse_stream(modelId=MODEL, messages=MESSAGES)
    except c.exceptions.ValidationException as error:
        assert "model identifier is invalid" in error.response["Error"]["Message"]
    else:
        raise AssertionError("no ValidationException for an unknown model")


def check_inband_exceptions(c, port):
    for mode, code, text in [
        ("inband-throttle-after-2", "throttlingException", "tok0 tok1 "),
        ("inband-unavailable-after-1", "serviceUnavailableException", "tok0 "),
        ("inband-internal-after-1", "internalServerException", "tok0 "),
        ("inband-validation-after-0", "validationException", ""),
        ("model-stream-error-after-3", "modelStreamErrorException", "tok0 tok1 tok2 "),
    ]:
        events, got, _, _, error = stream(c, mode)
        assert isinstance(error, EventStreamError), (mode, repr(error))
        assert error.response["Error"]["Code"] == code, (mode, error.response)
        assert error.response["Error"]["Message"], (mode, error.response)
        assert got == text, (mode, got)
        assert "messageStop" not in names(events)


def check_error_frame(c, port):
    _, text, _, _, error = stream(c, "error-frame-after-1")
    assert isinstance(error, EventStreamError), repr(error)
    assert error.response["Error"] == {"Code": "InternalFailure", "Message": "An internal failure occurred."}, \
        error.response
    assert text == "tok0 "


def check_bad_crc(c, port):
    _, text, _, _, error = stream(c, "bad-crc")
    assert isinstance(error, ChecksumMismatch), repr(error)
    assert text == "tok0 tok1 ", repr(text)


def check_cut(c, port):
    events, text, _, _, error = stream(c, "cut-after-3")
    assert error is not None, "a cut connection raised nothing"
    assert text == "tok0 tok1 tok2 " and "messageStop" not in names(events), (text, names(events))


def check_partial_frame(c, port):
    # botocore drops the incomplete frame at the end of the body silently:
    # what matters is that no messageStop comes.
    events, text, _, _, error = stream(c, "partial-frame-after-2")
    assert text == "tok0 tok1 " and "messageStop" not in names(events), (text, names(events), error)


def check_stall(c, port):
    # Well above a loaded machine's gaps between the first chunks, well below
    # the fake's 30 s stall.
    impatient = client(port, read_timeout=3)
    _, text, _, _, error = stream(impatient, "stall-after-2")
    assert error is not None and "timeout" in type(error).__name__.lower() + str(error).lower(), repr(error)
    assert text == "tok0 tok1 ", repr(text)


def check_wrong_secret(c, port):
    try:
        client(port, secret="not-the-secret").converse_stream(modelId=f"ok.{MODEL}", messages=MESSAGES)
    except ClientError as error:
        assert error.response["Error"]["Code"] == "InvalidSignatureException", error.response
        assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert "not-the-secret" not in str(error)
    else:
        raise AssertionError("a wrong secret was accepted")
    assert requests(port)[-1]["signature_ok"] is False


def check_unknown_access_key(c, port):
    try:
        client(port, access="AKIAUNKNOWN").converse_stream(modelId=f"ok.{MODEL}", messages=MESSAGES)
    except ClientError as error:
        assert error.response["Error"]["Code"] == "UnrecognizedClientException", error.response
    else:
        raise AssertionError("an unknown access key was accepted")


def bearer_client(port):
    """A client that sends the Bedrock API key of AWS_BEARER_TOKEN_BEDROCK
    as a bearer token (and signs nothing). botocore sends bearer tokens over
    HTTPS only and the fake has no TLS: the URL says https while the token is
    added, and http again when the request is sent."""
    c = client(port)

    def https(request, **kwargs):
        request.url = request.url.replace("http://", "https://", 1)

    def http(request, **kwargs):
        request.url = request.url.replace("https://", "http://", 1)

    c.meta.events.register("before-sign.bedrock-runtime", https)
    c.meta.events.register("before-send.bedrock-runtime", http)
    return c


def check_bearer(c, port):
    os.environ["AWS_BEARER_TOKEN_BEDROCK"] = API_KEY
    try:
        bearer = bearer_client(port)
        _, text, _, _, error = stream(bearer, "ok")
        assert error is None and text == TOKENS, (error, text)
        sent = requests(port)[-1]
        assert sent["auth"] == "bearer" and sent["bearer_ok"], sent
        os.environ["AWS_BEARER_TOKEN_BEDROCK"] = "ABSK-wrong-key"
        try:
            bearer_client(port).converse_stream(modelId=f"ok.{MODEL}", messages=MESSAGES)
        except ClientError as error:
            assert error.response["Error"]["Code"] == "UnrecognizedClientException", error.response
            assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        else:
            raise AssertionError("a wrong API key was accepted")
    finally:
        del os.environ["AWS_BEARER_TOKEN_BEDROCK"]


def check_session_token():
    proc, port = start_fake("--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY, "--session-token", "TOKEN123")
    try:
        session = botocore.session.get_session()
        with_token = session.create_client(
            "bedrock-runtime", region_name=REGION, endpoint_url=f"http://127.0.0.1:{port}",
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, aws_session_token="TOKEN123",
            config=Config(retries={"total_max_attempts": 1}))
        _, text, _, _, error = stream(with_token, "ok")
        assert error is None and text == TOKENS, (error, text)
        sent = requests(port)[-1]
        assert sent["signature_ok"] and "x-amz-security-token" in sent["signed_headers"].split(";"), sent
        try:
            client(port).converse_stream(modelId=f"ok.{MODEL}", messages=MESSAGES)
        except ClientError as error:
            assert error.response["Error"]["Code"] == "UnrecognizedClientException", error.response
        else:
            raise AssertionError("a request without the session token was accepted")
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def main() -> int:
    proc, port = start_fake("--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY, "--api-key", API_KEY)
    passed = failed = 0
    try:
        c = client(port)
        checks = [check_ok, check_max_tokens, check_reasoning, check_variants, check_arn_model_id, check_http_errors,
                  check_inband_exceptions, check_error_frame, check_bad_crc, check_cut, check_partial_frame,
                  check_stall, check_wrong_secret, check_unknown_access_key, check_bearer]
        runs = [(check.__name__, lambda check=check: check(c, port)) for check in checks]
        runs.append(("check_session_token", check_session_token))
        for name, run in runs:
            try:
                run()
                print(f"ok {name}")
                passed += 1
            except Exception:
                print(f"FAIL {name}")
                traceback.print_exc(file=sys.stdout)
                failed += 1
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    print(f"botocore {botocore.__version__}")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""SigV4 signatures computed by botocore, for Keel's signer to reproduce.

Prints one JSON object: {"botocore": VERSION, "vectors": [...]}. Each vector
holds the request as sent (method, url, the headers given to the signer, the
body in base64), the credentials, the frozen time, and what botocore added:
Authorization, X-Amz-Date, X-Amz-Security-Token, X-Amz-Content-SHA256, plus
its canonical request and string to sign.

With `--sign JSON` it signs one request given on the command line instead
(Keel's Bedrock client's own request, in BedrockProviderTests).

Most vectors sign an AWSRequest with SigV4Auth directly. The `client_*`
vectors go through a real botocore `bedrock-runtime` client: a `before-send`
hook captures the signed request and stops it before any network, so the URL
encoding and the headers botocore chooses to sign are its own, not ours.
"""
import base64
import datetime
import json
import sys

import botocore
import botocore.auth
import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

FROZEN = datetime.datetime(2025, 1, 15, 12, 34, 56)
ACCESS_KEY = "AKIDEXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
TOKEN = "IQoJb3JpZ2luX2VjEXAMPLETOKEN//////////wEaCXVzLWVhc3QtMSJHMEUCIQ=="


def freeze_time():
    # botocore >= 1.31 asks compat.get_current_datetime (imported into
    # botocore.auth); older versions call datetime.datetime.utcnow() there.
    if hasattr(botocore.auth, "get_current_datetime"):
        botocore.auth.get_current_datetime = lambda *args, **kwargs: FROZEN

    class FrozenDateTime(datetime.datetime):
        @classmethod
        def utcnow(cls):
            return FROZEN

        @classmethod
        def now(cls, tz=None):
            return FROZEN.replace(tzinfo=tz) if tz else FROZEN

    real = datetime

    class FrozenModule:
        def __getattr__(self, name):
            return FrozenDateTime if name == "datetime" else getattr(real, name)

    botocore.auth.datetime = FrozenModule()


class RecordingSigV4Auth(SigV4Auth):
    canonical = None
    sts = None

    def string_to_sign(self, request, canonical_request):
        self.canonical = canonical_request
        self.sts = super().string_to_sign(request, canonical_request)
        return self.sts


def text(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


ADDED = ("Authorization", "X-Amz-Date", "X-Amz-Security-Token", "X-Amz-Content-SHA256")


def vector(name, method, url, headers, body, region, token, service="bedrock", signer_headers=None, extra=None):
    request = AWSRequest(method=method, url=url, headers=dict(headers), data=body)
    credentials = Credentials(ACCESS_KEY, SECRET_KEY, token)
    auth = RecordingSigV4Auth(credentials, service, region)
    auth.add_auth(request)
    result = {
        "name": name,
        "method": method,
        "url": url,
        "headers": [[k, text(v)] for k, v in (signer_headers if signer_headers is not None else headers)],
        "body_base64": base64.b64encode(body or b"").decode("ascii"),
        "region": region,
        "service": service,
        "access_key": ACCESS_KEY,
        "secret_key": SECRET_KEY,
        "session_token": token,
        "timestamp": FROZEN.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "canonical_request": auth.canonical,
        "string_to_sign": auth.sts,
        "added": {k: text(request.headers[k]) for k in ADDED if k in request.headers},
    }
    result.update(extra or {})
    return result


class Captured(Exception):
    pass


def client_vector(name, region, token, model_id):
    """Signs through a real bedrock-runtime client and captures the request."""
    session = botocore.session.get_session()
    session.set_credentials(ACCESS_KEY, SECRET_KEY, token)
    client = session.create_client("bedrock-runtime", region_name=region)
    captured = {}

    def capture(request, **kwargs):
        captured["request"] = request
        raise Captured()

    client.meta.events.register("before-send", capture)
    try:
        client.converse_stream(
            modelId=model_id,
            messages=[{"role": "user", "content": [{"text": "Say hi in Japanese: こんにちは"}]}],
            inferenceConfig={"maxTokens": 64},
        )
    except Captured:
        pass
    request = captured["request"]
    sent = [(k, text(v)) for k, v in request.headers.items()]
    client_added = {k: v for k, v in sent if k in ADDED}
    # Some headers (Content-Length, amz-sdk-*) are added after signing; the
    # signer saw only those the client's SignedHeaders name, and User-Agent.
    signed = client_added["Authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    given = [(k, v) for k, v in sent if k not in ADDED and (k.lower() in signed or k.lower() == "user-agent")]
    body = request.body if isinstance(request.body, bytes) else (request.body or "").encode("utf-8")
    # Re-sign the same inputs with a plain SigV4Auth: it must give the
    # client's own Authorization, or this vector would prove nothing.
    result = vector(name, request.method, request.url, given, body, region, token)
    if result["added"] != client_added:
        raise SystemExit(f"{name}: re-signing did not reproduce the client's headers: {result['added']} != {client_added}")
    result["client_signed_headers"] = signed
    result["model_id"] = model_id
    return result


def sign_one(request):
    """`--sign JSON`: one request as a client built it (method, url, headers
    without the signer's own, body in base64, region, session token), signed
    by SigV4Auth with the vectors' keys and frozen time."""
    body = base64.b64decode(request["body_base64"])
    headers = [(k, v) for k, v in request["headers"] if k.lower() not in ("host",) + tuple(a.lower() for a in ADDED)]
    return vector(request.get("name", "request"), request["method"], request["url"], headers, body, request["region"],
                  request.get("session_token"))


def main():
    freeze_time()
    if len(sys.argv) == 3 and sys.argv[1] == "--sign":
        json.dump(sign_one(json.loads(sys.argv[2])), sys.stdout, ensure_ascii=False, indent=1)
        sys.stdout.write("\n")
        return
    converse_body = json.dumps(
        {"messages": [{"role": "user", "content": [{"text": "Hello"}]}], "inferenceConfig": {"maxTokens": 256}}
    ).encode("utf-8")
    host = "https://bedrock-runtime.eu-north-1.amazonaws.com"
    model_path = "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse-stream"
    vectors = [
        vector(
            "converse_stream",
            "POST",
            host + model_path,
            [("Content-Type", "application/json"), ("Accept", "application/vnd.amazon.eventstream")],
            converse_body,
            "eu-north-1",
            None,
            extra={"path_segments": ["model", "anthropic.claude-sonnet-4-5-20250929-v1:0", "converse-stream"]},
        ),
        vector(
            "converse_stream_session_token",
            "POST",
            host + model_path,
            [("Content-Type", "application/json"), ("User-Agent", "keel/1.0 (unsigned)")],
            converse_body,
            "eu-north-1",
            TOKEN,
            extra={"path_segments": ["model", "anthropic.claude-sonnet-4-5-20250929-v1:0", "converse-stream"]},
        ),
        vector(
            "inference_profile_arn",
            "POST",
            "https://bedrock-runtime.us-east-1.amazonaws.com/model/"
            + "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-sonnet-4-5-20250929-v1%3A0"
            + "/converse-stream",
            [("Content-Type", "application/json")],
            converse_body,
            "us-east-1",
            None,
            extra={
                "path_segments": [
                    "model",
                    "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-5-20250929-v1:0",
                    "converse-stream",
                ]
            },
        ),
        vector(
            "get_query_spaces_unicode",
            "GET",
            "https://bedrock.us-west-2.amazonaws.com/foundation-models"
            "?byProvider=Anthropic%20Claude&name=%E6%97%A5%E6%9C%AC%E8%AA%9E%20%C3%A9&a=b&a=a&empty=",
            [("X-Keel-Note", "  spaced    out\tvalue  "), ("Content-Type", "application/json")],
            b"",
            "us-west-2",
            None,
            extra={
                "path_segments": ["foundation-models"],
                "query_items": [
                    ["byProvider", "Anthropic Claude"],
                    ["name", "日本語 é"],
                    ["a", "b"],
                    ["a", "a"],
                    ["empty", ""],
                ],
            },
        ),
        vector(
            "empty_body",
            "POST",
            host + "/model/amazon.nova-micro-v1%3A0/invoke",
            [],
            b"",
            "eu-north-1",
            TOKEN,
            extra={"path_segments": ["model", "amazon.nova-micro-v1:0", "invoke"]},
        ),
        vector(
            "fake_upstream_http_port",
            "POST",
            "http://127.0.0.1:8080/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream",
            [("Content-Type", "application/json")],
            converse_body,
            "eu-north-1",
            None,
            extra={"path_segments": ["model", "anthropic.claude-3-haiku-20240307-v1:0", "converse-stream"]},
        ),
        client_vector("client_converse_stream", "eu-north-1", None, "anthropic.claude-sonnet-4-5-20250929-v1:0"),
        client_vector("client_converse_stream_session_token", "us-east-1", TOKEN, "us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
    ]
    json.dump({"botocore": botocore.__version__, "vectors": vectors}, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""AWS event-stream frames checked against botocore, both ways.

  eventstream_check.py read FILE
      Parses FILE (frames Keel's encoder wrote) with botocore's own
      `EventStreamBuffer`, fed in small chunks, and prints
      {"botocore": VERSION, "messages": [{"headers": {...}, "payload_base64": ...}]}
      or {"botocore": VERSION, "error": CLASS, "message": TEXT} on a parse error.

  eventstream_check.py write FILE
      Writes frames built here from the format's description with
      `zlib.crc32` (botocore has no encoder) and prints the messages written,
      each header with its wire type, for Keel's decoder to reproduce.

Header values print as tagged strings, so that no JSON parser can confuse
1 with true: "bool:true", "int:-7" (byte, short, int, long and timestamp),
"string:TEXT", "base64:..." (byte arrays and UUIDs).
"""
import base64
import json
import struct
import sys
import uuid
import zlib

import botocore
from botocore.eventstream import EventStreamBuffer, ParserError


def json_value(value):
    # Tagged strings: JSON parsers disagree on whether 1 and true are equal.
    if isinstance(value, bool):
        return "bool:" + ("true" if value else "false")
    if isinstance(value, int):
        return f"int:{value}"
    if isinstance(value, str):
        return "string:" + value
    if isinstance(value, (bytes, bytearray)):
        return "base64:" + base64.b64encode(bytes(value)).decode("ascii")
    raise TypeError(type(value))


def read(path):
    with open(path, "rb") as handle:
        data = handle.read()
    buffer = EventStreamBuffer()
    messages = []
    try:
        # Odd-sized chunks, so messages straddle add_data calls.
        for start in range(0, len(data), 7):
            buffer.add_data(data[start : start + 7])
            for message in buffer:
                messages.append(
                    {
                        "headers": {name: json_value(value) for name, value in message.headers.items()},
                        "payload_base64": base64.b64encode(message.payload).decode("ascii"),
                    }
                )
    except ParserError as error:
        return {"botocore": botocore.__version__, "error": type(error).__name__, "message": str(error)}
    leftover = len(buffer._data)
    return {"botocore": botocore.__version__, "messages": messages, "leftover_bytes": leftover}


def encode_header(name, type_code, value):
    encoded_name = name.encode("utf-8")
    out = struct.pack("!B", len(encoded_name)) + encoded_name + struct.pack("!B", type_code)
    if type_code in (0, 1):
        return out
    if type_code == 2:
        return out + struct.pack("!b", value)
    if type_code == 3:
        return out + struct.pack("!h", value)
    if type_code == 4:
        return out + struct.pack("!i", value)
    if type_code in (5, 8):
        return out + struct.pack("!q", value)
    if type_code == 6:
        return out + struct.pack("!H", len(value)) + value
    if type_code == 7:
        encoded = value.encode("utf-8")
        return out + struct.pack("!H", len(encoded)) + encoded
    if type_code == 9:
        return out + value
    raise ValueError(type_code)


def frame(headers, payload):
    encoded_headers = b"".join(encode_header(*header) for header in headers)
    total = 12 + len(encoded_headers) + len(payload) + 4
    prelude = struct.pack("!II", total, len(encoded_headers))
    prelude += struct.pack("!I", zlib.crc32(prelude) & 0xFFFFFFFF)
    message = prelude + encoded_headers + payload
    return message + struct.pack("!I", zlib.crc32(message) & 0xFFFFFFFF)


def bedrock_event(event_type, payload):
    return (
        [(":event-type", 7, event_type), (":content-type", 7, "application/json"), (":message-type", 7, "event")],
        json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8"),
    )


def write(path):
    messages = [
        bedrock_event("messageStart", {"role": "assistant", "p": "abcd"}),
        bedrock_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "こんにちは, é 𝄞"}, "p": "ab"}),
        bedrock_event(
            "contentBlockDelta",
            {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "Thinking…"}}, "p": "abcdefgh"},
        ),
        (
            [
                (":exception-type", 7, "throttlingException"),
                (":content-type", 7, "application/json"),
                (":message-type", 7, "exception"),
            ],
            b'{"message":"Too many requests, please wait before trying again."}',
        ),
        ([(":message-type", 7, "error"), (":error-code", 7, "InternalFailure"), (":error-message", 7, "boom")], b""),
        (
            [
                ("true", 0, True),
                ("false", 1, False),
                ("byte", 2, -7),
                ("short", 3, -300),
                ("int", 4, -70000),
                ("long", 5, -(2**40)),
                ("bytes", 6, b"\x00\x01\xfe\xff"),
                ("string", 7, "ünïcødé"),
                ("timestamp", 8, 1736944496789),
                ("uuid", 9, uuid.UUID("123e4567-e89b-12d3-a456-426614174000").bytes),
            ],
            bytes(range(256)),
        ),
        ([], b""),
    ]
    with open(path, "wb") as handle:
        for headers, payload in messages:
            handle.write(frame(headers, payload))
    return {
        "botocore": botocore.__version__,
        "messages": [
            {
                "headers": {name: {"type": type_code, "value": json_value(value)} for name, type_code, value in headers},
                "payload_base64": base64.b64encode(payload).decode("ascii"),
            }
            for headers, payload in messages
        ],
    }


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("read", "write"):
        raise SystemExit("usage: eventstream_check.py read|write FILE")
    result = read(sys.argv[2]) if sys.argv[1] == "read" else write(sys.argv[2])
    json.dump(result, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
